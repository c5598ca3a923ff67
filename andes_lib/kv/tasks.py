"""Long-context text tasks for KV-cache eviction (report §4, OKV), generated here with their answers.

Five kinds, each a document of about 1k tokens (`scale` grows it) followed by a question, so one prefill serves
every policy:

- ``restate`` (Rouge-1): profiles of people, one paragraph each in one sentence pattern; the model restates the
  paragraph about one of them, word for word. The 135M model mixes the look-alike profiles up even with the whole
  cache (a third of the asked profile's facts), and Rouge-1 rewards the shared pattern: a task it fails.
- ``recite`` (Rouge-1, the paper's metric, the chapter's Rouge task): 24 notes of a town newsletter, each on its own
  subject in its own words (a bakery, a night train, a cargo ship...); the model repeats the note about one subject,
  word for word, scored by Rouge-1 against it. The 135M model copies a note it can tell apart from the others:
  with the whole cache it states about 90% of the asked note's own words, against about a third on ``restate``.
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

TASKS = ("recite", "restate", "needle", "decisions", "lookup", "multidoc")

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
STREETS = ["Elm Street", "Mill Lane", "Harbour Road", "Station Square", "Rose Avenue", "King Street"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TEAMS = ["Red Foxes", "Blue Herons", "Iron Bears", "Green Otters", "Golden Eagles", "Silver Wolves"]
BRANDS = ["Lumo", "Zenta", "Orvik", "Paxel", "Quorra"]
SHIPS = ["Northern Star", "Sea Lark", "Blue Horizon", "Morning Tide", "Atlas Queen"]
VOLCANOES = ["Etna", "Vesuvius", "Hekla", "Fuji"]
CATS = ["Pepper", "Shadow", "Biscuit", "Mango"]
# the recite task's notes: (subject named in the question, text with {slots}); every note has its own words
NOTES = [
    ("the bakery", "The bakery on {street} opens at {n4_7} in the morning. Its owner, {name}, bakes {n20_90} loaves of "
     "rye bread every day and sells apple cake on Sundays. The queue often reaches the corner before seven."),
    ("the weather report", "The weather report for {city} promises heavy rain on {day}, with winds from the north at "
     "{n30_90} kilometres per hour. Farmers are advised to bring their sheep down from the hills before the storm."),
    ("the football final", "In the football final, the {team} beat the {team2} by {n2_5} goals to {n0_1}. The winning "
     "goal came in the last minute from a young striker called {name}, and the fans sang until midnight."),
    ("the soup recipe", "To make tomato soup, fry two onions in butter, add {n5_12} ripe tomatoes and a spoon of sugar, "
     "then simmer for twenty minutes. Blend it smooth and serve it with fresh basil and warm bread."),
    ("the night train", "The night train to {city} leaves platform {n2_14} at {n8_11} in the evening. It has sleeping "
     "cars with clean blankets, a small restaurant that serves hot chocolate, and it arrives just after sunrise."),
    ("the science museum", "The science museum has a new room about volcanoes. Visitors can touch a piece of black "
     "lava, watch a film about {volcano}, and build a tiny eruption with vinegar and baking soda."),
    ("the community garden", "In the community garden, {name} grows pumpkins, beans and {n3_9} kinds of sunflowers. "
     "Children come on Wednesdays to water the beds and to feed the chickens behind the shed."),
    ("the new phone", "The new phone from {brand} has a folding screen, a battery that lasts {n20_60} hours and a camera "
     "that can photograph the stars. It will cost less than the old model when it reaches the shops."),
    ("the city library", "The city library lends bicycles as well as books. A card costs nothing, and members may "
     "borrow a bicycle for {n2_14} days, as long as they return it with the lights working."),
    ("the jazz concert", "The jazz concert in the old church starts at {n6_9} in the evening. A trio from {city} plays "
     "piano, bass and drums, and the tickets include a glass of lemonade during the break."),
    ("the doctor's advice", "Doctor {name} reminds patients to drink enough water in hot weather, to wear a hat at noon "
     "and to rest in the shade. Children and old people feel the heat first."),
    ("the cargo ship", "The cargo ship {ship} carried {n200_900} containers of coffee across the ocean. A storm near "
     "the islands delayed it by two days, but the captain kept every box dry."),
    ("the chess club", "Our school's chess club meets every {day} after lunch. The best player, {name}, won the regional "
     "cup last spring and now teaches the youngest members how to open a game."),
    ("the baby elephant", "The zoo welcomed a baby elephant this week. She weighs {n80_130} kilograms, follows her "
     "mother everywhere and loves to splash in the muddy pond when the keepers are not looking."),
    ("the Saturday market", "At the Saturday market, a farmer from the valley sells honey in glass jars, goat cheese "
     "wrapped in leaves and {n4_12} sorts of apples. Everything is gone by noon."),
    ("the mountain hut", "The path to the mountain hut climbs {n300_900} metres through pine forest. Hikers should carry "
     "water and a warm jacket, because the wind at the top is cold even in August."),
    ("the lost cat", "A black cat called {cat} went missing near the fire station on {day}. She wears a red collar with "
     "a silver bell, and her family offers a reward of {n20_100} euros to whoever brings her home."),
    ("the bridge repairs", "The old stone bridge will be closed for repairs for {n3_10} weeks. Workers will replace the "
     "cracked railings and paint the lamps green, so cars must use the ferry or drive around the lake."),
    ("the art exhibition", "The art exhibition at the town hall shows {n30_80} paintings of lighthouses by a retired "
     "sailor named {name}. Entry is free, and the painter answers questions every afternoon."),
    ("the swimming pool", "The outdoor swimming pool reopens on the first warm weekend of June. The water is heated to "
     "{n24_28} degrees, the slide has been repainted, and lifeguards now teach free lessons to beginners."),
    ("the cinema", "The small cinema near the river shows silent films every {day} with a live pianist. Popcorn is "
     "sold in paper bags, and the front row is kept for children under {n8_12}."),
    ("the bus timetable", "From next month, bus number {n3_40} will run every ten minutes instead of every twenty. The "
     "last bus leaves the central station at midnight and stops outside the hospital."),
    ("the charity run", "More than {n200_900} runners joined the charity run around the park. They raised money for "
     "the animal shelter, and the fastest runner finished the five kilometres in under seventeen minutes."),
    ("the robot competition", "Students from the technical college built a robot that sorts socks by colour. It won "
     "first prize at the robot competition in {city} and will be shown at the spring fair."),
]
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
    stop: str = ""  # the answer ends at its first occurrence (a one-paragraph answer ends at a blank line)


def encode(tokenizer, sample: Sample) -> tuple[torch.Tensor, int]:
    """ChatML prompt ids (1, T) and the position where the question (with the template tail) starts."""
    head = f"<|im_start|>user\n{sample.document}\n\n"
    tail = f"{sample.question}<|im_end|>\n<|im_start|>assistant\n{sample.prime}"
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    tail_ids = tokenizer(tail, add_special_tokens=False).input_ids
    return torch.tensor([head_ids + tail_ids]), len(head_ids)


def answer_text(prediction: str, sample: Sample) -> str:
    """The part of a generated continuation that answers: up to `sample.stop`, when the sample has one."""
    return prediction.split(sample.stop)[0] if sample.stop else prediction


def score(prediction: str, sample: Sample) -> float:
    """Rouge-1 F1 against the reference, or 1.0 when the reference appears in the answer."""
    prediction = answer_text(prediction, sample)
    if sample.metric == "rouge1":
        return rouge1(prediction, sample.answer)
    return float(re.search(rf"\b{re.escape(sample.answer.lower())}\b", prediction.lower()) is not None)


def fact_recall(prediction: str, sample: Sample) -> float:
    """Share of the reference's own words (those in fewer than half of the document's paragraphs: names, cities,
    hobbies, not the sentence pattern the `restate` profiles share) that the prediction states. Rouge-1 rewards
    copying the pattern; this says whether the asked paragraph was retrieved."""
    prediction = answer_text(prediction, sample)
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


def _note(rng: random.Random, text: str) -> str:
    """Fill a note's slots: `{nA_B}` an integer in [A, B], the others drawn from their lists."""
    lists = {"street": STREETS, "name": NAMES, "city": CITIES, "day": DAYS, "team": TEAMS[:3], "team2": TEAMS[3:],
             "volcano": VOLCANOES, "brand": BRANDS, "ship": SHIPS, "cat": CATS}
    slots = {}
    for key in re.findall(r"{(\w+)}", text):
        if key.startswith("n") and "_" in key:
            lo, hi = key[1:].split("_")
            slots[key] = rng.randint(int(lo), int(hi))
        else:
            slots[key] = rng.choice(lists[key])
    return text.format(**slots)


def recite(rng: random.Random, n_docs: int = 24, prime_words: int = 6) -> Sample:
    """`n_docs` newsletter notes, each on its own subject in its own words; the model repeats one of them.

    The first `prime_words` words of the asked note start the answer; the reference is the rest of it, and the
    answer ends at the first blank line (a note is one paragraph). Unlike `restate`, the notes share no sentence
    pattern, so a wrong or patched-together note scores low and the full-cache model copies the right one."""
    if not 1 <= n_docs <= len(NOTES):
        raise ValueError(f"recite has {len(NOTES)} distinct notes, cannot build {n_docs}")
    notes = [(subject, _note(rng, text)) for subject, text in rng.sample(NOTES, n_docs)]
    subject, paragraph = notes[rng.randrange(n_docs)]
    prime = " ".join(paragraph.split()[:prime_words])
    return Sample("recite", "Notes from our town newsletter.\n\n" + "\n\n".join(p for _, p in notes),
                  f"Repeat, word for word, the paragraph about {subject}.", paragraph[len(prime):].strip(), "rouge1",
                  prime=prime, stop="\n\n")


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


GENERATORS = {"recite": recite, "restate": restate, "needle": needle, "decisions": decisions, "lookup": lookup,
              "multidoc": multidoc}
# new tokens an answer needs (a recited note is ~50 tokens after its start; a code 5 digits; a city a word or two)
ANSWER_TOKENS = {"recite": 64, "restate": 48, "needle": 8, "decisions": 48, "lookup": 16, "multidoc": 4}


SIZES = {"recite": ("n_docs", 24), "restate": ("n_docs", 16), "needle": ("n_docs", 16),
         "decisions": ("n_chatter", 60), "lookup": ("n_pairs", 56), "multidoc": ("n_docs", 12)}


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
