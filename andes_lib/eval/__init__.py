"""Evaluation by the paper's domains (ANDESVL.md §3): metrics, chance/majority baselines, and the harness."""

from .baselines import baselines, chance_score
from .harness import EvalResult, evaluate, plot_scores
from .metrics import (METRICS, box_iou, exact_match, extract_answer, iou_match, parse_box, pope_metrics,
                      relaxed_match, reward, rouge1, score, yes_no, yesno_match)

__all__ = [
    "baselines", "chance_score", "EvalResult", "evaluate", "plot_scores", "METRICS", "box_iou", "exact_match",
    "extract_answer", "iou_match", "parse_box", "pope_metrics", "relaxed_match", "reward", "rouge1", "score",
    "yes_no", "yesno_match",
]
