"""Long-context text tasks for KV-cache eviction (report §4, OKV), generated here with their answers.

Five kinds, each a document of about 1k tokens (`scale` grows it) followed by a question, so one prefill serves
every policy:

- ``restate`` (Rouge-1, the paper's metric): profiles of people, one paragraph each; the model restates the
  paragraph about one of them, word for word, scored by Rouge-1 against it.
- ``needle`` (contains): the same profiles with one door code hidden among them; the model returns the code.
  The retrieval task where question-blind eviction is known to fail.
- ``multidoc`` (contains): short biographies of people with unique names; the model says where one of them lives.
- ``decisions`` (Rouge-1): meeting minutes where a few sentences record decisions among small talk;
  the model lists the decisions, scored by Rouge-1 against them. The 135M model does this poorly even with the
  whole cache, and dropping the small talk can raise its score: a harder, noisier Rouge task.
- ``lookup`` (contains): 56 `city -> five-digit code` lines; the model returns one code. Every line looks alike;
  the 135M model finds the right one about one time in six even with the whole cache, so it says little.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from ..data.base import user_message
from ..eval.metrics import rouge1, tokens

TASKS = ("restate", "needle", "decisions", "lookup", "multidoc")

NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Karin", "Leo",
         "Mira", "Nils", "Olga", "Paul", "Rosa", "Sven", "Tara", "Victor", "Alice", "Bruno", "Clara", "Daniel",
         "Emma", "Frank", "Greta", "Henry", "Ida", "Jakob", "Lena", "Martin", "Nora", "Oscar", "Petra", "Simon"]
SURNAMES = ["Berg", "Costa", "Dahl", "Engel", "Fischer", "Gray", "Holm", "Ivers", "Jensen", "Keller", "Lund",
            "Moreau", "Novak", "Ortiz", "Perez", "Quinn", "Rossi", "Stone", "Torres", "Weber"]
CITIES = ["Oslo", "Lisbon", "Vienna", "Dublin", "Krakow", "Seville", "Tallinn", "Porto", "Geneva", "Bergen",
          "Lyon", "Turin", "Ghent", "Malmo", "Riga", "Split", "Bilbao", "Graz", "Leeds", "Aarhus", "Basel",
          "Bremen", "Cork", "Delft", "Essen", "Faro", "Genoa", "Haarlem", "Innsbruck", "Kaunas", "Lille",
          "Munich", "Nantes", "Odense", "Padua", "Reims", "Salzburg", "Trieste", "Utrecht", "Verona", "Zagreb",
          "Antwerp", "Bordeaux", "Cadiz", "Dresden", "Eindhoven", "Florence", "Gdansk", "Hamburg", "Ibiza", "Kiel",
          "Linz", "Marseille", "Naples", "Oporto", "Pisa", "Rotterdam", "Siena", "Toulouse", "Uppsala"]
JOBS = ["baker", "nurse", "pilot", "teacher", "architect", "chemist", "librarian", "carpenter", "journalist",
        "gardener", "violinist", "engineer", "photographer", "fisherman", "pharmacist", "translator"]
HOBBIES = ["chess", "sailing", "pottery", "climbing", "painting", "cycling", "birdwatching", "cooking", "rowing",
           "knitting", "fencing", "astronomy"]
PETS = ["a grey cat", "two dogs", "a parrot", "a tortoise", "three goldfish", "a rabbit", "no pets", "a horse"]
TOPICS = ["the new website", "the office move", "the summer party", "the budget for next year", "the client survey",
          "the training plan", "the printer contract", "the hiring process", "the product launch", "the team lunch",
          "the security audit", "the holiday schedule"]
LANGUAGES = ["Italian", "Japanese", "Polish", "Greek", "Finnish", "Portuguese"]
COLLECTIONS = ["stamps", "old maps", "vinyl records", "seashells", "tin toys", "postcards"]
INSTRUMENTS = ["trumpet", "tuba", "trombone", "accordion", "cello", "banjo"]
DECISIONS = [
    "The team decided to launch the new website on the first of March.",
    "The team decided to hire two more engineers before the summer.",
    "The team decided to move the weekly meeting to Tuesday morning.",
    "The team decided to cut the travel budget by ten percent.",
    "The team decided to replace the old printers with two new ones.",
    "The team decided to hold the summer party in the city park.",
    "The team decided to send the client survey at the end of the month.",
    "The team decided to start a training course on data safety.",
    "The team decided to open a second office in Lisbon next year.",
    "The team decided to buy new laptops for the design group.",
    "The team decided to publish a monthly newsletter for customers.",
    "The team decided to close the office on the last Friday of December.",
]
CHATTER = [
    "{a} said that the coffee machine on the second floor was broken again.",
    "{a} told a long story about a weekend trip to the mountains.",
    "{a} asked whether anyone had seen the blue umbrella in the kitchen.",
    "{a} mentioned that the traffic this morning had been terrible.",
    "{a} and {b} talked for a while about {t}, but nobody was sure what to do.",
    "{a} joked that the meeting room was too cold for a serious talk.",
    "{a} wondered if the plants near the window needed more water.",
    "{a} shared some photos of a new puppy with {b}.",
    "{a} said that {t} could wait until the next meeting.",
    "{a} reminded everyone that the car park would be cleaned on Thursday.",
    "{b} thought the lunch at the new cafe was too expensive.",
    "{a} and {b} could not agree on the best pizza place in town.",
]


@dataclass(frozen=True)
class Sample:
    """One long prompt: the document, the question, the reference answer and how it is scored."""

    task: str
    document: str
    question: str
    answer: str
    metric: str  # "rouge1" | "contains"
    prime: str = ""  # the start of the answer, written into the assistant turn


def encode(tokenizer, sample: Sample) -> tuple[torch.Tensor, int]:
    """ChatML prompt ids (1, T) and the position where the question (with the template tail) starts."""
    head = f"<|im_start|>user\n{sample.document}\n\n"
    tail = f"{sample.question}<|im_end|>\n<|im_start|>assistant\n{sample.prime}"
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    tail_ids = tokenizer(tail, add_special_tokens=False).input_ids
    return torch.tensor([head_ids + tail_ids]), len(head_ids)


def score(prediction: str, sample: Sample) -> float:
    """Rouge-1 F1 against the reference, or 1.0 when the reference appears in the answer."""
    if sample.metric == "rouge1":
        return rouge1(prediction, sample.answer)
    return float(re.search(rf"\b{re.escape(sample.answer.lower())}\b", prediction.lower()) is not None)


def fact_recall(prediction: str, sample: Sample) -> float:
    """Share of the reference's own words (those in fewer than half of the document's paragraphs: names, cities,
    hobbies, not the sentence pattern the `restate` profiles share) that the prediction states. Rouge-1 rewards
    copying the pattern; this says whether the asked paragraph was retrieved."""
    paragraphs = [set(tokens(p)) for p in sample.document.split("\n\n")]
    own = {w for w in tokens(sample.answer) if 2 * sum(w in p for p in paragraphs) < len(paragraphs)}
    return len(own & set(tokens(prediction))) / len(own) if own else float("nan")


def _people(rng: random.Random, n: int) -> list[str]:
    """`n` distinct full names."""
    people: list[str] = []
    while len(people) < n:
        person = f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"
        if person not in people:
            people.append(person)
    return people


def _biography(rng: random.Random, person: str, city: str) -> str:
    """Four sentences about `person` (the multidoc task's documents)."""
    first = person.split()[0]
    return (f"{person} lives in {city} and works as a {rng.choice(JOBS)}. In the evenings {first} enjoys "
            f"{rng.choice(HOBBIES)} and spends weekends with friends. At home there is {rng.choice(PETS)}. Friends "
            f"describe {first} as calm, curious and always on time. Last summer {first} travelled to "
            f"{rng.choice(CITIES)} by train and brought back a small gift for every neighbour. {first} is learning "
            f"{rng.choice(LANGUAGES)}.")


def _profile(rng: random.Random, person: str, city: str) -> str:
    """A paragraph about `person`: one fixed sentence pattern, eight facts particular to them."""
    first = person.split()[0]
    return (f"{person} works as a {rng.choice(JOBS)} and lives in {city}. In the evenings {first} enjoys "
            f"{rng.choice(HOBBIES)}, and at weekends {first} plays the {rng.choice(INSTRUMENTS)} with friends. At home "
            f"{first} keeps {rng.choice(PETS)} and is learning {rng.choice(LANGUAGES)}. {first} collects "
            f"{rng.choice(COLLECTIONS)} and dreams of a long trip to {rng.choice(CITIES)}.")


def restate(rng: random.Random, n_docs: int = 16) -> Sample:
    """`n_docs` profiles of people with distinct first names, one paragraph each; the model restates one of them.

    The answer is started for the model ("Anna Berg works as a"), so the 135M model copies instead of inventing;
    the reference is the rest of the paragraph. All paragraphs share one sentence pattern (the model copies it
    reliably), so Rouge-1 of a paragraph copied from the wrong person is well above zero: read scores against the
    full cache's.
    """
    if n_docs > len(NAMES):
        raise ValueError(f"restate has {len(NAMES)} distinct first names, cannot build {n_docs} profiles")
    people = [f"{n} {rng.choice(SURNAMES)}" for n in rng.sample(NAMES, n_docs)]
    paragraphs = [_profile(rng, p, c) for p, c in zip(people, rng.sample(CITIES, n_docs), strict=True)]
    target = rng.randrange(n_docs)
    prime = f"{people[target]} works as a"
    return Sample("restate", "Profiles of our volunteers.\n\n" + "\n\n".join(paragraphs),
                  f"Repeat, word for word, the paragraph about {people[target]}.",
                  paragraphs[target][len(prime):].strip(), "rouge1", prime=prime)


def needle(rng: random.Random, n_docs: int = 16) -> Sample:
    """The restate task's profiles with one needle, a door code, as its own paragraph at a random place; the
    question asks for the code. Only the needle answers it, and nothing marks it as important before the question
    arrives: the classic failure of question-blind eviction (StreamingLLM, H2O)."""
    paragraphs = restate(rng, n_docs).document.split("\n\n")
    code = str(rng.randint(10000, 99999))
    paragraphs.insert(rng.randint(1, len(paragraphs)), f"The door code of the volunteer house is {code}.")
    return Sample("needle", "\n\n".join(paragraphs), "What is the door code of the volunteer house?", code,
                  "contains", prime="The door code of the volunteer house is")


def decisions(rng: random.Random, n_decisions: int = 3, n_chatter: int = 60) -> Sample:
    """Meeting minutes: `n_decisions` "Decision:" lines among `n_chatter` "Comment:" lines of small talk."""
    kept = rng.sample(DECISIONS, n_decisions)
    lines = []
    for _ in range(n_chatter):
        a, b = rng.sample(NAMES, 2)
        lines.append("Comment: " + rng.choice(CHATTER).format(a=a, b=b, t=rng.choice(TOPICS)))
    slots = sorted(rng.sample(range(2, n_chatter - 2), n_decisions))
    for offset, (slot, sentence) in enumerate(zip(slots, kept, strict=True)):
        lines.insert(slot + offset, "Decision: " + sentence)
    document = "Minutes of the team meeting.\n" + "\n".join(lines)
    question = "List the decisions of the meeting."
    return Sample("decisions", document, question, " ".join(kept), "rouge1")


def lookup(rng: random.Random, n_pairs: int = 56) -> Sample:
    """A table of `n_pairs` `city: code` lines; the question asks for the code of one city."""
    if n_pairs > len(CITIES):
        raise ValueError(f"lookup has {len(CITIES)} distinct cities, cannot build {n_pairs} lines")
    cities = rng.sample(CITIES, n_pairs)
    codes = [str(rng.randint(10000, 99999)) for _ in cities]
    target = rng.randrange(n_pairs)
    document = "Delivery codes of our branches.\n" + "\n".join(
        f"The delivery code of the {c} branch is {k}." for c, k in zip(cities, codes, strict=True))
    question = f"What is the delivery code of the {cities[target]} branch?"
    return Sample("lookup", document, question, codes[target], "contains")


def multidoc(rng: random.Random, n_docs: int = 12) -> Sample:
    """`n_docs` short biographies (no first name or surname twice); the question asks where one person lives.

    Unique names matter to the 135M model: with surnames shared between documents it answered 25-50% of 8-12
    prompts with the whole cache, against 75% here."""
    if n_docs > len(SURNAMES):
        raise ValueError(f"multidoc has {len(SURNAMES)} distinct surnames, cannot build {n_docs} documents")
    people = [f"{n} {s}" for n, s in zip(rng.sample(NAMES, n_docs), rng.sample(SURNAMES, n_docs), strict=True)]
    homes = rng.sample(CITIES, n_docs)
    docs = [f"Document {i + 1}. {_biography(rng, person, city)}"
            for i, (person, city) in enumerate(zip(people, homes, strict=True))]
    target = rng.randrange(n_docs)
    question = f"In which city does {people[target]} live?"
    # the question also opens the prompt: the 135M model finds the person far more often that way
    return Sample("multidoc", question + "\n\n" + "\n".join(docs), question, homes[target], "contains",
                  prime=f"{people[target]} lives in")


GENERATORS = {"restate": restate, "needle": needle, "decisions": decisions, "lookup": lookup, "multidoc": multidoc}


SIZES = {"restate": ("n_docs", 16), "needle": ("n_docs", 16), "decisions": ("n_chatter", 60),
         "lookup": ("n_pairs", 56), "multidoc": ("n_docs", 12)}


def make_samples(task: str, n: int, seed: int = 0, scale: float = 1.0) -> list[Sample]:
    """`n` samples of one task, reproducible from `seed`; `scale` shrinks or grows the document (1.0: ~1k tokens)."""
    if task not in GENERATORS:
        raise ValueError(f"unknown task {task!r}; known: {list(GENERATORS)}")
    if n < 1:
        raise ValueError(f"need at least one sample, got n={n}")
    if not 0.1 <= scale <= 2.0:
        raise ValueError(f"scale must be in [0.1, 2], got {scale}")
    name, size = SIZES[task]
    rng = random.Random(f"{task}-{seed}")
    return [GENERATORS[task](rng, **{name: max(12, round(size * scale))}) for _ in range(n)]


def encode_image(processor, image, question: str) -> tuple[dict[str, torch.Tensor], int]:
    """An image question for an AndesVL model, in the chat format the model was trained and evaluated with:
    processor outputs (1, T) and where the question starts."""
    text = processor.apply_chat_template([user_message(question, 1)], add_generation_prompt=True)
    head = text[: text.rindex(question)]
    batch = processor(images=[[image]], text=[text])
    question_start = processor(images=[[image]], text=[head]).input_ids.shape[1]
    return dict(batch), question_start
