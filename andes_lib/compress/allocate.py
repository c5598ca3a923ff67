"""Mixed precision: choose a scheme per weight matrix under a bits-per-weight budget, by sensitivity.

The sensitivity of a matrix under a scheme is the activation-weighted squared error of its quantised weights,
sum_j E[x_j^2] * |W_j - Q(W)_j|^2 (an estimate of the output error it adds; see `calibrate`). Starting from the
cheapest scheme everywhere, the greedy allocator repeatedly upgrades the matrix whose next scheme buys the largest
error drop per extra bit, until the budget is spent: the classic bit-allocation knapsack heuristic. A re-creation;
the paper names mixed precision only implicitly (1.8 average bpw, ANDESVL.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .schemes import dequantize_matrix, parse_scheme, quantize_matrix


@dataclass
class Allocation:
    """Chosen scheme per matrix, the resulting payload bpw (matrices only), and the sensitivity table."""

    schemes: dict[str, str]
    bpw: float
    sensitivity: dict[str, dict[str, float]]  # name -> scheme -> weighted error


def sensitivity_table(weights: dict[str, torch.Tensor], menu: list[str], importance: dict[str, torch.Tensor],
                      progress: bool = False, search: bool = True) -> dict[str, dict[str, float]]:
    """Weighted quantisation error of every matrix under every scheme of the menu (calibrated fits; `search=False`
    skips the clipping search: about ten times faster, a rougher ranking)."""
    table: dict[str, dict[str, float]] = {}
    for name, w in tqdm(weights.items(), desc="sensitivity", disable=not progress, leave=False):
        w = w.detach().float().reshape(w.shape[0], -1)
        h = importance.get(name)
        h = torch.ones(w.shape[1]) if h is None else h.float()
        table[name] = {}
        for s in menu:
            scheme = parse_scheme(s)
            deq = dequantize_matrix(quantize_matrix(w, scheme, h, search=search), scheme, *w.shape)
            table[name][s] = float(((deq - w) ** 2 * h).sum())
    return table


def allocate(weights: dict[str, torch.Tensor], menu: list[str], budget_bpw: float,
             sensitivity: dict[str, dict[str, float]]) -> Allocation:
    """Greedy bit allocation: cheapest scheme everywhere, then the best error-per-bit upgrades within budget."""
    if not menu:
        raise ValueError("the scheme menu is empty")
    shapes = {n: (w.shape[0], w.numel() // w.shape[0]) for n, w in weights.items()}
    cost = {n: {s: parse_scheme(s).nominal_bpw(*shapes[n]) * weights[n].numel() for s in menu} for n in weights}
    total = sum(w.numel() for w in weights.values())
    order = {n: sorted(menu, key=lambda s: cost[n][s]) for n in weights}
    choice = {n: order[n][0] for n in weights}
    spent = sum(cost[n][choice[n]] for n in weights)
    if spent > budget_bpw * total:
        raise ValueError(f"budget {budget_bpw} bpw is below the cheapest scheme ({spent / total:.3f} bpw)")
    while True:
        best, best_gain = None, 0.0
        for n in weights:
            i = order[n].index(choice[n])
            for nxt in order[n][i + 1:]:  # any dearer scheme that lowers the error
                extra = cost[n][nxt] - cost[n][choice[n]]
                gain = (sensitivity[n][choice[n]] - sensitivity[n][nxt]) / max(extra, 1e-9)
                if gain > best_gain and spent + extra <= budget_bpw * total:
                    best, best_gain = (n, nxt, extra), gain
        if best is None:
            break
        n, nxt, extra = best
        choice[n], spent = nxt, spent + extra
    return Allocation(choice, spent / total, sensitivity)
