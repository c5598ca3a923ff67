"""Synthetic data: determinism, answers re-derived from scenes, balance, split disjointness, storage, errors."""

from __future__ import annotations

import html
import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from andes_lib.data import (DOMAINS, GENERATORS, SPLITS, build_dataset, build_preference_dataset,
                            build_verifiable_dataset, corpus_texts, generate, load_data, sample_seed, write_samples)
from andes_lib.data import render as render_mod
from andes_lib.data.dataset import SAMPLES_FILE
from andes_lib.eval.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("domain", list(GENERATORS))
def test_same_seed_same_bytes_and_text(domain):
    a, b, c = generate(domain, 1234), generate(domain, 1234), generate(domain, 1235)
    assert (a.question, a.answer, a.rationale, a.scene) == (b.question, b.answer, b.rationale, b.scene)
    assert [png(i) for i in a.images] == [png(i) for i in b.images]
    assert (a.scene, [png(i) for i in a.images]) != (c.scene, [png(i) for i in c.images])
    # the image is a pure function of the scene description
    assert [png(i) for i in GENERATORS[domain].render(a.scene)] == [png(i) for i in a.images]


def test_recording_lists_what_each_image_shows_and_only_inside_the_block():
    """`render.recording()` sees every shape and line of text, on the image it lands on (the vision stage's labels)."""
    sample = generate("multi_image", 3)
    with render_mod.recording() as calls:
        images = GENERATORS["multi_image"].render(sample.scene)
    for image, panel in zip(images, sample.scene["panels"], strict=True):
        drawn = [(c["shape"], list(c["box"])) for c in calls if c["image"] is image]
        assert drawn == [(o["shape"], list(o["box"])) for o in panel["objects"]]
    sample = generate("text_rich", 5)
    with render_mod.recording() as calls:
        GENERATORS["text_rich"].render(sample.scene)
    assert [c["text"] for c in calls if c["kind"] == "text"] == [line["text"] for line in sample.scene["lines"]]
    GENERATORS["text_rich"].render(sample.scene)  # outside the block: nothing more is listed
    assert len([c for c in calls if c["kind"] == "text"]) == len(sample.scene["lines"])


@pytest.mark.parametrize("domain", list(GENERATORS))
def test_answer_rederived_from_scene(domain):
    module, rng = GENERATORS[domain], random.Random(7)
    for _ in range(300):
        sample = module.plan(rng)
        assert module.solve(sample.scene) == sample.answer, (sample.task, sample.question, sample.scene)
        assert sample.metric in METRICS
        if sample.metric in ("exact", "relaxed", "yesno"):
            assert sample.answer in sample.options, (sample.task, sample.answer)


def test_images_have_the_documented_shape():
    for domain in DOMAINS:
        sample = generate(domain, 5)
        assert sample.images and all(i.mode == "RGB" and 64 <= max(i.size) <= 192 for i in sample.images)
    assert len(generate("multi_image", 5).images) >= 2
    assert generate("text_only", 5).images == []


@pytest.mark.parametrize("domain", DOMAINS)
def test_answers_balanced_no_blind_shortcut(domain):
    """Within each task no answer dominates, so a model that ignores the image stays near chance."""
    module, rng = GENERATORS[domain], random.Random(11)
    by_task: dict[str, Counter] = {}
    for _ in range(800):
        s = module.plan(rng)
        by_task.setdefault(s.task, Counter())[s.answer] += 1
    for task, counts in by_task.items():
        top = counts.most_common(1)[0][1] / sum(counts.values())
        assert top < 0.6, (domain, task, counts.most_common(3))


def test_yes_no_tasks_are_half_yes():
    rng = random.Random(3)
    answers = Counter(GENERATORS["hallucination"].plan(rng).answer for _ in range(1000))
    assert 0.45 < answers["yes"] / 1000 < 0.55


def test_split_seeds_disjoint():
    seeds = {split: {sample_seed(split, d, i) for d in GENERATORS for i in range(2000)} for split in SPLITS}
    assert all(len(s) == len(GENERATORS) * 2000 for s in seeds.values())
    assert not (seeds["train"] & seeds["validation"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["validation"] & seeds["test"])
    other_seed = {sample_seed(split, d, i, seed=1) for split in SPLITS for d in GENERATORS for i in range(2000)}
    assert not other_seed & set().union(*seeds.values())
    with pytest.raises(ValueError, match="index"):
        sample_seed("train", "gui", 10**7)
    with pytest.raises(ValueError, match="split"):
        sample_seed("dev", "gui", 0)
    with pytest.raises(ValueError, match="domain"):
        sample_seed("train", "ocr", 0)


def test_no_test_item_appears_in_train():
    train = build_dataset("train", n_per_domain=25, use_cache=False, progress=False)
    test = build_dataset("test", n_per_domain=25, use_cache=False, progress=False)

    def keys(ds):
        return {(r["question"], tuple(png(i) for i in r["images"])) for r in ds}

    assert not keys(train) & keys(test)
    assert not set(train["seed"]) & set(test["seed"])


def test_build_dataset_format_and_cache(tmp_path):
    ds = build_dataset("validation", ["chart", "gui"], n_per_domain=3, cache_dir=tmp_path, progress=False)
    assert len(ds) == 6 and Counter(ds["domain"]) == {"chart": 3, "gui": 3}
    row = ds[0]
    user, assistant = row["messages"]
    assert [c["type"] for c in user["content"]] == ["image"] * len(row["images"]) + ["text"]
    assert user["content"][-1]["text"] == row["question"]
    assert assistant == {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}
    assert isinstance(row["images"][0], Image.Image)
    assert GENERATORS[row["domain"]].solve(json.loads(row["scene"])) == row["answer"]
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("sft-validation-")
    again = build_dataset("validation", ["chart", "gui"], n_per_domain=3, cache_dir=tmp_path, progress=False)
    assert again["id"] == ds["id"] and len(list(tmp_path.iterdir())) == 1
    build_dataset("validation", ["chart", "gui"], n_per_domain=3, seed=1, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2


def test_build_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        build_dataset("dev", use_cache=False)
    with pytest.raises(ValueError, match="domain"):
        build_dataset("train", ["ocr"], use_cache=False)
    with pytest.raises(ValueError, match="n_per_domain"):
        build_dataset("train", n_per_domain=0, use_cache=False)
    with pytest.raises(ValueError, match="kind"):
        build_dataset("train", kind="rlhf", use_cache=False)


def test_preference_and_verifiable_rows():
    prefs = build_preference_dataset("train", n_per_domain=4, use_cache=False, progress=False)
    for r in prefs:
        chosen, rejected = r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]
        assert chosen == r["answer"] and METRICS[r["metric"]](rejected, r["answer"]) < 1.0
        assert r["prompt"][0]["role"] == "user" and len(r["images"]) >= 1
    hallucination = [r for r in prefs if r["domain"] == "hallucination"]
    assert all({r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]} == {"yes", "no"}
               for r in hallucination)
    ver = build_verifiable_dataset("train", ["reasoning"], n_per_domain=3, use_cache=False, progress=False)
    assert set(ver.column_names) >= {"prompt", "images", "answer", "metric"}
    assert ver[0]["prompt"][0]["content"][-1]["text"] == ver[0]["question"]


def test_rationales_end_in_boxed_answer():
    for domain in ("reasoning", "chart"):
        for seed in range(30):
            s = generate(domain, seed)
            assert s.rationale.endswith(f"\\boxed{{{s.answer}}}.")
            thinking = s.messages(thinking=True)[1]["content"][0]["text"]
            assert thinking.startswith("<think>\n") and thinking.endswith(f"</think>\n\n{s.answer}")


def test_multilingual_is_half_chinese_and_needs_a_cjk_font(monkeypatch):
    rng = random.Random(0)
    samples = [GENERATORS["multilingual"].plan(rng) for _ in range(400)]
    zh = [s for s in samples if s.lang == "zh"]
    assert 0.4 < len(zh) / 400 < 0.6
    assert all(render_mod.is_cjk(s.question) for s in zh)
    monkeypatch.setattr(render_mod, "CJK_FONT_CANDIDATES", ("/nonexistent/font.ttc",))
    monkeypatch.delenv("ANDES_CJK_FONT", raising=False)
    render_mod.cjk_font.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="fonts-wqy-microhei"):
            render_mod.cjk_font(20)
    finally:
        render_mod.cjk_font.cache_clear()


def test_write_and_load_samples_roundtrip(tmp_path):
    files = write_samples(tmp_path, n_per_domain=2, domains=["gui", "multi_image", "text_only"])
    assert [f.parent.name for f in files] == ["gui", "multi_image", "text_only"]
    ds = load_data(tmp_path)
    assert len(ds) == 6 and sum(len(i) for i in ds["images"]) == 2 + sum(
        len(generate("multi_image", sample_seed("validation", "multi_image", i)).images) for i in range(2))
    one = load_data(tmp_path / "gui" / SAMPLES_FILE)
    assert one["answer"] == [generate("gui", sample_seed("validation", "gui", i)).answer for i in range(2)]


def test_committed_samples_are_current(tmp_path):
    """data_samples/ is what write_samples() produces now (regenerate it after changing a generator)."""
    committed = ROOT / "data_samples"
    write_samples(tmp_path)
    for domain in GENERATORS:
        fresh = (tmp_path / domain / SAMPLES_FILE).read_text(encoding="utf-8")
        assert (committed / domain / SAMPLES_FILE).read_text(encoding="utf-8") == fresh, domain
    assert sum(f.stat().st_size for f in committed.rglob("*") if f.is_file()) < 5_000_000


def test_bad_paths_and_malformed_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no dataset here"):
        load_data(tmp_path)
    good = {"domain": "gui", "task": "refer", "question": "q?", "answer": "OK", "metric": "exact", "images": []}
    cases = {
        "{not json": "not valid JSON",
        json.dumps({k: v for k, v in good.items() if k != "answer"}): "lacks field.*answer",
        json.dumps(good | {"metric": "bleu"}): "unknown metric 'bleu'",
        json.dumps(good | {"domain": "ocr"}): "unknown domain 'ocr'",
        json.dumps(good | {"answer": 3}): "'answer' must be a string",
        json.dumps(good | {"images": "a.png"}): "'images' must be a list",
        "[1, 2]": "expected a JSON object",
    }
    for line, message in cases.items():
        file = tmp_path / "bad.jsonl"
        file.write_text(json.dumps(good) + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message) as err:
            load_data(file)
        assert "bad.jsonl:2" in str(err.value)
    file.write_text(json.dumps(good | {"images": ["gone.png"]}) + "\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="gone.png"):
        load_data(file)
    file.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no records"):
        load_data(file)


def test_corpus_covers_both_languages_and_formats():
    texts = corpus_texts(n_per_domain=50)
    assert texts == corpus_texts(n_per_domain=50)
    joined = "\n".join(texts)
    for needle in ("<|box_start|>(", "\\boxed{", "<think>", "红色", "What colour is the", "Beijing"):
        assert needle in joined, needle


def test_gallery_and_browser_show_the_sample():
    from andes_lib.data.view import browser, gallery_html

    ds = build_dataset("validation", ["multilingual", "gui"], n_per_domain=2, use_cache=False, progress=False)
    page = gallery_html(ds)
    assert page.count("<img ") == 4 and ds[0]["question"] in page
    widget = browser(ds)
    (pick, index), view = widget.children[0].children, widget.children[1]
    assert list(pick.options) == ["multilingual", "gui"] and ds[0]["answer"] in view.value
    pick.value, index.value = "gui", 1
    assert html.escape(ds[3]["question"]) in view.value


def test_colour_questions_about_absent_shapes():
    """About a quarter of general-VQA colour questions name a shape the scene lacks, and answer so."""
    from andes_lib.data import general_vqa

    rng = random.Random(0)
    plans = [general_vqa.plan(rng) for _ in range(2000)]
    colour = [p for p in plans if p.task == "color"]
    missing = [p for p in colour if all(o["shape"] != p.scene["query"]["shape"] for o in p.scene["objects"])]
    assert 0.18 < len(missing) / len(colour) < 0.32
    assert all(p.answer == f"There is no {p.scene['query']['shape']}." and p.answer in p.options for p in missing)
    assert all(p.answer in general_vqa.COLOURS for p in colour if p not in missing)
