"""How ``stories.txt`` was made: short English documents generated from templates written here.

The built-in corpus is small, simple and regular on purpose: a tiny model learns it in seconds,
yet it has the structure pretraining objectives need. Sentences of a document follow each other
(a day from morning to night, a fable from its start to its moral), so next-sentence prediction
can tell a true continuation from a random sentence; words recur in fixed patterns (a baker bakes
bread, two plus three is five, winter is cold), so a masked word can be recovered from its context.

``compose_corpus()`` returns the text, deterministically (``random.Random(seed)``);
``python -m models.data.compose`` rewrites the shipped file, and the tests check that the file
equals what this code makes. Format: one sentence per line, documents separated by a blank line.
"""
from __future__ import annotations

import random
from pathlib import Path

SEED = 1234
N_DOCUMENTS = 760
CORPUS_PATH = Path(__file__).with_name("stories.txt")

# -- word lists --------------------------------------------------------------------------------
NAMES = {"she": ["Anna", "Maria", "Lena", "Sara", "Emma", "Nora", "Ruth", "Clara", "Rosa", "Julia",
                 "Alice", "Grace", "Ida", "Vera", "Lucy"],
         "he": ["Tom", "Paul", "Sam", "Leo", "Ben", "Max", "Hugo", "Oscar", "Felix", "Jack",
                "Peter", "Adam", "Karl", "Ivan", "Noah"]}
POSS = {"she": "her", "he": "his"}

# job -> (workplace, what they do there, what they make or care for, who comes)
JOBS = {
    "baker": ("bakery", "bakes bread and small sweet cakes", "bread", "hungry neighbours"),
    "farmer": ("farm", "feeds the cows and works in the fields", "milk", "the people of the town"),
    "teacher": ("school", "teaches the children to read and to count", "lessons", "the children"),
    "doctor": ("hospital", "helps people who are sick", "medicine", "sick people"),
    "fisher": ("harbour", "sails out in a small boat and catches fish", "fish", "the cooks of the town"),
    "painter": ("studio", "paints pictures of the sea and the hills", "pictures", "people who love art"),
    "builder": ("building site", "builds houses of wood and stone", "houses", "young families"),
    "driver": ("bus station", "drives the red bus around the town", "seats", "many passengers"),
    "nurse": ("clinic", "takes care of old and sick people", "clean beds", "the patients"),
    "singer": ("theatre", "sings old songs for a large crowd", "songs", "the audience"),
    "gardener": ("park", "plants flowers and cuts the grass", "flowers", "people who walk in the park"),
    "cook": ("restaurant", "cooks soup, rice and fresh vegetables", "meals", "hungry guests"),
    "tailor": ("shop", "sews coats and shirts by hand", "clothes", "people who need new clothes"),
    "librarian": ("library", "keeps the books in order and helps readers", "books", "curious readers"),
    "carpenter": ("workshop", "makes tables and chairs of oak", "furniture", "people with new homes"),
}
TOWNS = ["a small town near the river", "a quiet village in the hills", "a busy city by the sea",
         "an old town with narrow streets", "a village at the edge of the forest",
         "a town on a green island", "a city with many bridges", "a village near the lake"]
WAKE = ["early", "at six o'clock", "before the sun rises", "when the birds start to sing",
        "at seven o'clock", "when the church bell rings"]
GO = ["walks", "rides a bike", "takes the bus", "drives an old car", "runs"]
HOBBIES = ["reading books", "playing the piano", "walking in the forest", "swimming in the lake",
           "playing chess", "drawing birds", "growing tomatoes", "playing football", "writing letters",
           "fishing in the river", "dancing", "watching the stars"]
PETS = [("dog", "barks"), ("cat", "sleeps all day"), ("bird", "sings"), ("rabbit", "eats carrots"),
        ("horse", "runs in the field"), ("fish", "swims in a glass bowl"), ("goat", "eats everything")]
PET_NAMES = ["Sunny", "Pepper", "Bella", "Rocky", "Milo", "Daisy", "Shadow", "Lucky", "Coco", "Bruno"]
EVENING = ["cooks a simple dinner", "reads a book by the fire", "calls an old friend",
           "writes in a diary", "listens to music", "eats soup with bread", "walks by the water"]
NIGHT = ["goes to bed when the moon is high", "falls asleep at ten o'clock",
         "sleeps well after the long day", "goes to bed early"]

ANIMALS = ["fox", "bear", "rabbit", "mouse", "owl", "wolf", "deer", "crow", "turtle", "squirrel",
           "frog", "duck", "lion", "goose", "hedgehog"]
ANIMAL_ADJ = ["clever", "lazy", "brave", "shy", "proud", "kind", "greedy", "old", "young", "quick"]
HOMES = ["in the deep forest", "near a clear stream", "on a high mountain", "in a green valley",
         "under an old oak tree", "by a quiet pond"]
MEET_PLACES = ["the river", "the old bridge", "a tall tree", "the edge of the forest", "a field of corn",
               "the pond"]
TROUBLES = [("hungry", "shared its food with"), ("lost", "showed the way home to"),
            ("cold", "made a warm fire for"), ("sad", "sang a happy song for"),
            ("tired", "carried the bag of"), ("stuck in the mud", "pulled out")]
MORALS = ["a friend in need is a friend indeed", "kindness is never wasted",
          "slow and steady wins the race", "pride comes before a fall",
          "many hands make light work", "it is wise to think before you act",
          "those who share are never alone"]

SEASONS = {
    "spring": ("mild", "longer", "new leaves and flowers", "rain", "plant seeds"),
    "summer": ("hot", "long", "thick and green", "sun", "swim in the lake"),
    "autumn": ("cool", "shorter", "red and yellow", "wind", "pick apples"),
    "winter": ("cold", "short", "bare", "snow", "build a snowman"),
}

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
           "nineteen", "twenty"]

DISHES = {
    "vegetable soup": ["carrots", "onions", "potatoes", "salt"],
    "apple pie": ["apples", "flour", "butter", "sugar"],
    "tomato salad": ["tomatoes", "onions", "olive oil", "salt"],
    "pancakes": ["flour", "milk", "eggs", "butter"],
    "fish stew": ["fish", "potatoes", "onions", "pepper"],
    "rice with beans": ["rice", "beans", "garlic", "salt"],
    "lemon cake": ["lemons", "flour", "sugar", "eggs"],
    "mushroom pasta": ["pasta", "mushrooms", "cream", "garlic"],
}
SIDES = ["fresh bread", "a glass of milk", "a cup of tea", "green salad", "cold water"]

CITIES = ["Northbridge", "Eastport", "Westfield", "Southmoor", "Greenhill", "Stonebay", "Redwater",
          "Oakdale"]
VEHICLES = [("train", "station"), ("bus", "bus stop"), ("boat", "harbour"), ("plane", "airport")]
SIGHTS = ["green fields", "tall mountains", "a wide river", "small farms", "a dark forest",
          "white sheep", "a blue lake", "old windmills"]
LANDMARKS = ["the old castle", "the big market", "the museum of art", "the tall tower",
             "the botanic garden", "the harbour", "the zoo", "the cathedral"]
RETURNS = ["the next day", "after a week", "on Sunday", "two days later"]
FRUITS = ["apples", "pears", "oranges", "plums", "lemons", "peaches", "bananas", "mangoes"]

FACTS = [
    "The sky is blue on a clear day.", "Grass is green.", "Snow is white and cold.",
    "Fire is hot and bright.", "Fish live in water.", "Birds have wings and can fly.",
    "Cows eat grass and give milk.", "Bees make honey from flowers.", "The sun rises in the east.",
    "The sun sets in the west.", "A week has seven days.", "A year has twelve months.",
    "Ice melts when it gets warm.", "Water boils when it is very hot.", "The moon shines at night.",
    "Trees grow from small seeds.", "Spiders have eight legs.", "Dogs like to play with a ball.",
    "Cats like to sleep in the sun.", "Owls hunt at night.", "Bread is made from flour and water.",
    "Rain falls from dark clouds.", "Plants need water and light.", "Apples grow on trees.",
    "The sea is full of salt water.", "Horses can run very fast.", "Ducks can swim and fly.",
    "A clock tells the time.", "Books are full of stories.", "Stars are very far away.",
]


# -- documents ---------------------------------------------------------------------------------
def _person(r: random.Random):
    pron = r.choice(["she", "he"])
    return r.choice(NAMES[pron]), pron


def _coins(n: int) -> str:
    return f"{NUMBERS[n]} coin{'' if n == 1 else 's'}"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def day_of_work(r: random.Random) -> list[str]:
    name, pron = _person(r)
    job = r.choice(list(JOBS))
    place, does, makes, who = JOBS[job]
    pet, pet_does = r.choice(PETS)
    pet_name = r.choice(PET_NAMES)
    lines = [
        f"{name} is a {job} who lives in {r.choice(TOWNS)}.",
        f"Every morning {pron} wakes up {r.choice(WAKE)}.",
        f"Then {pron} {r.choice(GO)} to the {place}.",
        f"At the {place} {name} {does}.",
        f"The {makes} {'are' if makes.endswith('s') else 'is'} for {who}.",
    ]
    if r.random() < 0.6:
        lines.append(f"{_cap(pron)} has a {pet} called {pet_name} that {pet_does}.")
    lines.append(f"After work {name} likes {r.choice(HOBBIES)}.")
    lines.append(f"In the evening {pron} {r.choice(EVENING)}.")
    lines.append(f"At last {name} {r.choice(NIGHT)}.")
    return lines


def fable(r: random.Random) -> list[str]:
    a, b = r.sample(ANIMALS, 2)
    trouble, help_ = r.choice(TROUBLES)
    lines = [
        f"Once upon a time a {r.choice(ANIMAL_ADJ)} {a} lived {r.choice(HOMES)}.",
        f"One day the {a} met a {b} near {r.choice(MEET_PLACES)}.",
        f"The {b} was {trouble} and asked the {a} for help.",
        f"The {a} {help_} the {b}.",
        f"After that day the {a} and the {b} were good friends.",
    ]
    if r.random() < 0.5:
        lines.append(f"When the {a} was {r.choice(TROUBLES)[0]} later, the {b} helped it too.")
    lines.append(f"The lesson of this story is that {r.choice(MORALS)}.")
    return lines


def season(r: random.Random) -> list[str]:
    name = r.choice(list(SEASONS))
    air, days, leaves, sky, act = SEASONS[name]
    who, pron = _person(r)
    lines = [
        f"In {name} the air is {air} and the days are {days}.",
        f"The trees are {leaves} in {name}.",
        f"Often there is {sky} in {name}.",
        f"Children like to {act} in {name}.",
        f"{who} says that {name} is {POSS[pron]} favourite season.",
    ]
    if r.random() < 0.5:
        lines.insert(3, f"People wear {'light' if air in ('hot', 'mild') else 'warm'} clothes in {name}.")
    return lines


def sums(r: random.Random) -> list[str]:
    lines = ["Here are some sums."]
    for _ in range(r.randint(4, 7)):
        kind = r.random()
        if kind < 0.45:
            a, b = r.randint(0, 10), r.randint(0, 10)
            lines.append(f"{_cap(NUMBERS[a])} plus {NUMBERS[b]} is {NUMBERS[a + b]}.")
        elif kind < 0.8:
            a = r.randint(1, 20)
            b = r.randint(0, a)
            lines.append(f"{_cap(NUMBERS[a])} minus {NUMBERS[b]} is {NUMBERS[a - b]}.")
        else:
            a, b = r.randint(1, 4), r.randint(1, 5)
            lines.append(f"{_cap(NUMBERS[a])} times {NUMBERS[b]} is {NUMBERS[a * b]}.")
    return lines


def counting(r: random.Random) -> list[str]:
    start = r.randint(0, 12)
    stop = min(20, start + r.randint(4, 8))
    words = NUMBERS[start:stop + 1]
    lines = [f"Let us count from {words[0]} to {words[-1]}.",
             _cap(", ".join(words)) + ".",
             f"After {words[-1]} comes {NUMBERS[stop + 1] if stop < 20 else 'twenty one'}."]
    if start > 0:
        lines.append(f"Before {words[0]} comes {NUMBERS[start - 1]}.")
    return lines


def recipe(r: random.Random) -> list[str]:
    dish = r.choice(list(DISHES))
    a, b, c, d = DISHES[dish]
    minutes = r.choice(["ten", "fifteen", "twenty", "thirty", "forty"])
    return [
        f"This is how to make {dish}.",
        f"You need {a}, {b}, {c} and {d}.",
        f"First put the {a} in a large pot.",
        f"Then add the {b} and the {c}.",
        f"Cook everything for {minutes} minutes.",
        f"At the end add the {d}.",
        f"Serve the {dish} with {r.choice(SIDES)}.",
    ]


def journey(r: random.Random) -> list[str]:
    name, pron = _person(r)
    src, dst = r.sample(CITIES, 2)
    vehicle, stop = r.choice(VEHICLES)
    hours = r.randint(2, 9)
    s1, s2 = r.sample(SIGHTS, 2)
    return [
        f"{name} went to the {stop} in {src}.",
        f"There {pron} took the {vehicle} to {dst}.",
        f"The trip took {NUMBERS[hours]} hours.",
        f"On the way {pron} saw {s1} and {s2}.",
        f"In {dst} {name} visited {r.choice(LANDMARKS)}.",
        f"{_cap(pron)} came back to {src} {r.choice(RETURNS)}.",
    ]


def market(r: random.Random) -> list[str]:
    name, pron = _person(r)
    coins = r.randint(5, 20)
    fruit = r.choice(FRUITS)
    k = r.randint(1, coins)
    return [
        f"{name} went to the market with {_coins(coins)}.",
        f"At the market the {fruit} cost one coin each.",
        f"{_cap(pron)} bought {NUMBERS[k]} {fruit}.",
        f"So {pron} paid {_coins(k)} and had {_coins(coins - k)} left.",
        f"{name} carried the {fruit} home in a basket.",
    ]


def facts(r: random.Random) -> list[str]:
    return ["Here are some facts about the world."] + r.sample(FACTS, r.randint(4, 7))


KINDS = [(day_of_work, 5), (fable, 4), (journey, 3), (market, 3), (recipe, 2), (season, 2),
         (sums, 2), (counting, 1), (facts, 1)]


def compose_documents(seed: int = SEED, n: int = N_DOCUMENTS) -> list[list[str]]:
    r = random.Random(seed)
    makers = [m for m, w in KINDS for _ in range(w)]
    return [r.choice(makers)(r) for _ in range(n)]


def compose_corpus(seed: int = SEED, n: int = N_DOCUMENTS) -> str:
    return "\n\n".join("\n".join(doc) for doc in compose_documents(seed, n)) + "\n"


if __name__ == "__main__":
    CORPUS_PATH.write_text(compose_corpus(), encoding="utf-8")
    print(f"wrote {CORPUS_PATH} ({CORPUS_PATH.stat().st_size} bytes)")
