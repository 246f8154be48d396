"""A bank of true facts with short answers that a small model may know (117 facts).

Each entry is (entity, entity_type, attribute, answer, wrong_alternatives). Text answers carry plausible
wrong alternatives (a country's other big cities) used for `contradicting` facts and DPO `rejected`;
numeric answers get nearby numbers instead (see `facts.nearby_number`).
"""
from __future__ import annotations

# (country, capital, plausible wrong alternatives)
_CAPITALS = (
    ("France", "Paris", ("Lyon", "Marseille")),
    ("Germany", "Berlin", ("Munich", "Hamburg")),
    ("Italy", "Rome", ("Milan", "Naples")),
    ("Spain", "Madrid", ("Barcelona", "Seville")),
    ("Portugal", "Lisbon", ("Porto", "Braga")),
    ("Japan", "Tokyo", ("Osaka", "Kyoto")),
    ("China", "Beijing", ("Shanghai", "Guangzhou")),
    ("India", "New Delhi", ("Mumbai", "Kolkata")),
    ("Australia", "Canberra", ("Sydney", "Melbourne")),
    ("Canada", "Ottawa", ("Toronto", "Vancouver")),
    ("Brazil", "Brasilia", ("Rio de Janeiro", "Sao Paulo")),
    ("Argentina", "Buenos Aires", ("Cordoba", "Rosario")),
    ("Mexico", "Mexico City", ("Guadalajara", "Monterrey")),
    ("Egypt", "Cairo", ("Alexandria", "Giza")),
    ("Kenya", "Nairobi", ("Mombasa", "Kisumu")),
    ("Nigeria", "Abuja", ("Lagos", "Kano")),
    ("Russia", "Moscow", ("Saint Petersburg", "Novosibirsk")),
    ("Turkey", "Ankara", ("Istanbul", "Izmir")),
    ("Greece", "Athens", ("Thessaloniki", "Patras")),
    ("Sweden", "Stockholm", ("Gothenburg", "Malmo")),
    ("Norway", "Oslo", ("Bergen", "Trondheim")),
    ("Finland", "Helsinki", ("Tampere", "Turku")),
    ("Denmark", "Copenhagen", ("Aarhus", "Odense")),
    ("Poland", "Warsaw", ("Krakow", "Gdansk")),
    ("Austria", "Vienna", ("Salzburg", "Graz")),
    ("Switzerland", "Bern", ("Zurich", "Geneva")),
    ("the Netherlands", "Amsterdam", ("Rotterdam", "Utrecht")),
    ("Belgium", "Brussels", ("Antwerp", "Ghent")),
    ("Ireland", "Dublin", ("Cork", "Galway")),
    ("Hungary", "Budapest", ("Debrecen", "Szeged")),
    ("the Czech Republic", "Prague", ("Brno", "Ostrava")),
    ("South Korea", "Seoul", ("Busan", "Incheon")),
    ("Thailand", "Bangkok", ("Chiang Mai", "Phuket")),
    ("Vietnam", "Hanoi", ("Ho Chi Minh City", "Da Nang")),
    ("Pakistan", "Islamabad", ("Karachi", "Lahore")),
    ("Peru", "Lima", ("Cusco", "Arequipa")),
    ("Chile", "Santiago", ("Valparaiso", "Concepcion")),
    ("Colombia", "Bogota", ("Medellin", "Cali")),
    ("New Zealand", "Wellington", ("Auckland", "Christchurch")),
    ("Morocco", "Rabat", ("Casablanca", "Marrakesh")),
    ("Saudi Arabia", "Riyadh", ("Jeddah", "Mecca")),
    ("Iran", "Tehran", ("Isfahan", "Shiraz")),
    ("the United States", "Washington", ("New York", "Los Angeles")),
    ("the United Kingdom", "London", ("Manchester", "Birmingham")),
    ("Cuba", "Havana", ("Santiago de Cuba", "Camaguey")),
    ("Ukraine", "Kyiv", ("Kharkiv", "Odesa")),
)

_ATOMIC_NUMBERS = (
    ("hydrogen", 1), ("helium", 2), ("lithium", 3), ("carbon", 6), ("nitrogen", 7), ("oxygen", 8),
    ("fluorine", 9), ("neon", 10), ("sodium", 11), ("magnesium", 12), ("aluminium", 13), ("silicon", 14),
    ("phosphorus", 15), ("sulfur", 16), ("chlorine", 17), ("argon", 18), ("potassium", 19), ("calcium", 20),
    ("titanium", 22), ("iron", 26), ("cobalt", 27), ("nickel", 28), ("copper", 29), ("zinc", 30),
    ("krypton", 36), ("silver", 47), ("tin", 50), ("iodine", 53), ("xenon", 54), ("tungsten", 74),
    ("platinum", 78), ("gold", 79), ("mercury", 80), ("lead", 82), ("radon", 86), ("uranium", 92),
    ("plutonium", 94),
)

_EVENT_YEARS = (
    ("the fall of the Berlin Wall", 1989),
    ("the first crewed Moon landing", 1969),
    ("the sinking of the Titanic", 1912),
    ("the storming of the Bastille", 1789),
    ("the United States Declaration of Independence", 1776),
    ("the start of World War I", 1914),
    ("the start of World War II", 1939),
    ("the end of World War II", 1945),
    ("Columbus's first voyage to the Americas", 1492),
    ("the sealing of Magna Carta", 1215),
    ("the Battle of Hastings", 1066),
    ("the assassination of John F. Kennedy", 1963),
    ("the launch of Sputnik 1", 1957),
    ("the dissolution of the Soviet Union", 1991),
    ("the Wright brothers' first powered flight", 1903),
    ("the Chernobyl disaster", 1986),
    ("the September 11 attacks", 2001),
    ("the founding of the United Nations", 1945),
    ("the October Revolution in Russia", 1917),
    ("the Battle of Waterloo", 1815),
    ("the publication of On the Origin of Species", 1859),
    ("the first modern Olympic Games", 1896),
    ("the Wall Street Crash", 1929),
    ("the release of the first iPhone", 2007),
    ("the Great Fire of London", 1666),
    ("the reunification of Germany", 1990),
    ("the attack on Pearl Harbor", 1941),
    ("the first ascent of Mount Everest", 1953),
    ("the founding of the People's Republic of China", 1949),
    ("the independence of India", 1947),
    ("the introduction of euro banknotes and coins", 2002),
    ("the end of the American Civil War", 1865),
    ("Martin Luther's Ninety-five Theses", 1517),
    ("the Brexit referendum", 2016),
)

KNOWN_FACTS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    tuple((c, "country", "capital", cap, alts) for c, cap, alts in _CAPITALS)
    + tuple((e, "element", "atomic number", str(z), ()) for e, z in _ATOMIC_NUMBERS)
    + tuple((ev, "event", "year", str(y), ()) for ev, y in _EVENT_YEARS)
)
