"""The generative command grammar of the synthetic ``commands`` domain.

Smart home, timers, alarms, reminders, calendar, music, navigation, weather, messages and shopping requests
of 3-10 words, numbers spelled out, a few hundred words in all. A template is words, ``{slot}`` (one
alternative of ``SLOTS[slot]``, itself expanded) and ``[optional words]`` (kept half the time).

    >>> import random
    >>> sentence(random.Random(0))  # doctest: +SKIP
    'set a timer for twenty five minutes'
"""

import random
import re

MIN_WORDS, MAX_WORDS = 3, 10

_UNITS = "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """Spell out 1 <= n <= 99 ("forty two")."""
    if not 1 <= n <= 99:
        raise ValueError(f"n must be in 1..99, got {n}")
    if n < 10:
        return _UNITS[n - 1]
    if n < 20:
        return _TEENS[n - 10]
    tens, unit = divmod(n, 10)
    return _TENS[tens - 2] + ("" if unit == 0 else " " + _UNITS[unit - 1])


# Numeric slots are drawn by functions: {n:LO:HI} is a spelled-out integer in [LO, HI].
_NUMBER_SLOT = re.compile(r"\{n:(\d+):(\d+)\}")

SLOTS: dict[str, list[str]] = {
    "please": ["please", "for me", "right now", "now"],
    "room": ["kitchen", "living room", "bedroom", "bathroom", "hallway", "garage", "office", "dining room",
             "basement", "garden", "nursery", "guest room"],
    "light": ["lights", "lamp", "ceiling light", "reading light", "lights"],
    "onoff": ["on", "off"],
    "device": ["fan", "heater", "air conditioner", "television", "radio", "coffee machine", "dishwasher",
               "washing machine", "oven", "kettle", "vacuum cleaner", "speaker", "printer"],
    "color": ["red", "blue", "green", "yellow", "orange", "purple", "pink", "white", "warm white"],
    "updown": ["up", "down"],
    "brightness": ["brighter", "dimmer", "darker"],
    "lock": ["lock", "unlock"],
    "door": ["front door", "back door", "garage door", "side gate"],
    "blinds": ["blinds", "curtains", "shutters", "windows"],
    "openclose": ["open", "close"],
    "unit": ["seconds", "minutes", "hours"],
    "duration": ["{n:2:59} {unit}", "one minute", "one hour", "an hour", "half an hour", "a minute",
                 "{n:2:12} hours and {n:2:59} minutes"],
    "clock": ["{n:1:12} o'clock", "{n:1:12} {n:10:59}", "half past {n:1:12}", "quarter past {n:1:12}",
              "quarter to {n:1:12}", "noon", "midnight", "{n:1:12} thirty"],
    "daypart": ["in the morning", "in the afternoon", "in the evening", "at night", "tonight"],
    "day": ["today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
            "next week", "the day after tomorrow", "this weekend"],
    "timer_name": ["pasta", "eggs", "laundry", "pizza", "rice", "tea", "workout", "nap", "bread", "cake"],
    "task": ["call mom", "call the doctor", "take out the trash", "water the plants", "feed the cat",
             "walk the dog", "pay the rent", "buy milk", "pick up the kids", "send the report",
             "book a table", "check the mail", "clean the kitchen", "charge my phone", "take my medicine",
             "renew my passport", "call the bank", "back up my files"],
    "event": ["meeting", "dentist appointment", "lunch", "dinner", "team call", "doctor's appointment",
              "birthday party", "haircut", "yoga class", "interview", "flight", "piano lesson"],
    "person": ["mom", "dad", "anna", "john", "sarah", "david", "emma", "michael", "lucy", "peter", "my boss",
               "my sister", "my brother", "grandma", "the team"],
    "genre": ["jazz", "rock", "classical music", "pop music", "the blues", "country music", "hip hop",
              "relaxing music", "something upbeat", "piano music", "the news", "a podcast"],
    "artist": ["the beatles", "mozart", "queen", "bach", "elvis", "adele", "miles davis", "bob marley"],
    "playlist": ["morning", "workout", "dinner", "party", "sleep", "road trip", "focus", "summer"],
    "media": ["pause the music", "stop the music", "resume the music", "skip this song", "play the next song",
              "play the previous song", "shuffle my songs", "repeat this song", "play it again"],
    "place": ["the airport", "the station", "the office", "home", "the nearest gas station",
              "the closest pharmacy", "the city center", "the hospital", "the beach", "the library",
              "the supermarket", "the park", "the museum", "a coffee shop", "the bank"],
    "travel": ["drive", "walk", "cycle", "get"],
    "weather": ["rain", "snow", "be sunny", "be windy", "be cold", "be warm", "get colder", "storm"],
    "city": ["london", "paris", "berlin", "boston", "chicago", "dublin", "madrid", "rome", "tokyo",
             "seattle", "denver", "sydney", "toronto", "vienna", "oslo"],
    "item": ["milk", "eggs", "bread", "butter", "cheese", "apples", "bananas", "coffee", "rice", "pasta",
             "tomatoes", "onions", "chicken", "orange juice", "yogurt", "tea", "sugar", "flour", "batteries",
             "soap", "paper towels", "olive oil", "carrots", "potatoes"],
    "list": ["shopping list", "grocery list", "list"],
    "message": ["i am running late", "i will be home soon", "see you tonight", "call me back",
                "dinner is ready", "happy birthday", "i am on my way", "thank you", "good night",
                "the meeting is moved", "can you pick me up", "love you"],
    "app": ["messages", "email", "chat"],
}

# (weight, template): weights favour the everyday requests.
TEMPLATES: list[tuple[int, str]] = [
    (4, "turn {onoff} the {room} {light}"), (3, "turn the {room} {light} {onoff}"),
    (3, "switch {onoff} the {light} in the {room}"), (2, "make the {room} {brightness}"),
    (2, "dim the {room} {light} to {n:10:90} percent"), (2, "set the {room} {light} to {color}"),
    (2, "change the {light} to {color} [{please}]"), (2, "turn {onoff} all the lights"),
    (3, "turn {onoff} the {device} [in the {room}]"), (2, "switch {onoff} the {device}"),
    (2, "set the heating to {n:15:28} degrees"), (2, "turn the heating {updown} [a little]"),
    (2, "set the {room} temperature to {n:15:28} degrees"), (1, "turn the volume {updown}"),
    (1, "set the volume to {n:1:10}"), (2, "{lock} the {door}"), (1, "is the {door} locked"),
    (2, "{openclose} the {room} {blinds}"), (1, "{openclose} the {blinds} [{please}]"),
    (4, "set a timer for {duration}"), (2, "set a {timer_name} timer for {duration}"),
    (2, "start a timer for {duration} [{please}]"), (1, "how much time is left on the {timer_name} timer"),
    (1, "cancel the {timer_name} timer"), (1, "cancel all timers"), (1, "add {duration} to the timer"),
    (3, "wake me up at {clock} [{daypart}]"), (3, "set an alarm for {clock} [{daypart}]"),
    (1, "set an alarm for {day} at {clock}"), (1, "snooze the alarm for {n:2:15} minutes"),
    (1, "cancel my alarm for {day}"), (1, "what time is my alarm"),
    (4, "remind me to {task} [{day}]"), (3, "remind me to {task} at {clock}"),
    (2, "remind me in {duration} to {task}"), (1, "remind me {day} to {task}"),
    (2, "what is on my calendar {day}"), (2, "add a {event} {day} at {clock}"),
    (2, "schedule a {event} with {person} {day}"), (1, "move my {event} to {day}"),
    (1, "cancel my {event} [{day}]"), (1, "when is my next {event}"), (1, "do i have anything {day}"),
    (3, "play {genre} [in the {room}]"), (2, "play some music by {artist}"), (2, "play my {playlist} playlist"),
    (2, "{media} [in the {room}]"), (1, "play {artist} in the {room}"), (1, "who is singing this song"),
    (3, "navigate to {place}"), (2, "how long does it take to {travel} to {place}"), (1, "is the {n:2:99} bus on time"),
    (1, "when is the next train to {city}"),
    (2, "take me to {place}"), (1, "find a route to {place} [{please}]"), (1, "how far is {place}"),
    (3, "what is the weather {day}"), (2, "will it {weather} {day}"), (2, "what is the weather in {city}"),
    (1, "will it {weather} in {city} {day}"), (1, "what is the temperature [outside] [{daypart}]"),
    (3, "send a message to {person} saying {message}"), (2, "text {person} {message}"),
    (1, "read my new {app}"), (1, "call {person} [{please}]"), (1, "send an email to {person}"),
    (3, "add {item} to my {list}"), (2, "add {item} and {item} to the {list}"),
    (1, "remove {item} from my {list}"), (1, "what is on my {list}"), (1, "do we need {item}"),
    (1, "order {n:2:12} bags of {item}"),
]

_TOKEN = re.compile(r"\{[a-z_]+\}|\{n:\d+:\d+\}|\[[^\]]*\]|[^\s\[\{]+")


def expand(template: str, rng: random.Random) -> str:
    """Expand one template (or slot alternative) into words, drawing every choice from ``rng``."""
    words = []
    for token in _TOKEN.findall(template):
        if token.startswith("[") and token.endswith("]"):
            if rng.random() < 0.5:
                words.append(expand(token[1:-1], rng))
        elif m := _NUMBER_SLOT.fullmatch(token):
            words.append(number_words(rng.randint(int(m.group(1)), int(m.group(2)))))
        elif token.startswith("{") and token.endswith("}"):
            words.append(expand(rng.choice(SLOTS[token[1:-1]]), rng))
        else:
            words.append(token)
    return " ".join(w for w in words if w)


def sentence(rng: random.Random) -> str:
    """One sentence of 3-10 words (lower-case; letters, apostrophes and spaces)."""
    weights = [w for w, _ in TEMPLATES]
    while True:
        _, template = rng.choices(TEMPLATES, weights=weights)[0]
        text = expand(template, rng)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            return text


def vocabulary() -> set[str]:
    """Every word the grammar can produce (numbers 1-99 included)."""
    words = set()
    for _, template in TEMPLATES:
        words.update(t for t in _TOKEN.findall(template) if t[0] not in "{[")
        for opt in re.findall(r"\[([^\]]*)\]", template):
            words.update(t for t in opt.split() if t[0] != "{")
    for alternatives in SLOTS.values():
        for alt in alternatives:
            words.update(t.strip("[]") for t in alt.split() if "{" not in t)
    words.update(" ".join(number_words(n) for n in range(1, 100)).split())
    return {w for w in words if w}
