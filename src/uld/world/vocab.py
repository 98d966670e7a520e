"""Word lists of the synthetic world (`uld.world`): names, places, jobs, genres, ...

Everything is invented or generic, ASCII only, and short, so a small BPE tokenizer covers it
with few tokens. Place names and surnames are built from syllables by the generator, so the
lists below only fix their sound.
"""

from __future__ import annotations

FIRST_NAMES = {
    "male": (
        "Aldric", "Bastian", "Corin", "Dorian", "Emeric", "Fabian", "Gideon", "Hadrian", "Ivo",
        "Jorah", "Kasimir", "Lucan", "Matthias", "Nikolai", "Oren", "Percival", "Quentin",
        "Rafael", "Silas", "Tobias", "Ulric", "Valentin", "Wendel", "Yannick", "Zoran", "Anselm",
        "Benedikt", "Cassian", "Darius", "Elias", "Florian", "Gregor", "Henrik", "Ilias", "Julian",
        "Konrad", "Leander", "Marius", "Nestor", "Osric",
    ),
    "female": (
        "Adela", "Brina", "Celeste", "Daria", "Elowen", "Fenna", "Greta", "Helena", "Ilse", "Juna",
        "Katrin", "Liora", "Maren", "Nadia", "Odile", "Petra", "Quilla", "Rosalind", "Selma",
        "Talia", "Ursa", "Vesna", "Wilma", "Xenia", "Yara", "Zelda", "Amara", "Beatrix", "Clara",
        "Dagny", "Esme", "Freya", "Gisela", "Hanna", "Iris", "Johanna", "Kira", "Lena", "Mira",
        "Nora",
    ),
    "non-binary": (
        "Arin", "Blair", "Cael", "Dale", "Eden", "Finley", "Gray", "Harper", "Indigo", "Jules",
        "Kai", "Lane", "Morgan", "Noel", "Oakley", "Perry", "Quinn", "Reese", "Sage", "Tate",
    ),
}

# Surnames are PREFIX + SUFFIX: 40 x 30 = 1,200 distinct names.
SURNAME_PREFIXES = (
    "Ash", "Bel", "Brann", "Cald", "Dun", "Eld", "Fair", "Gal", "Hall", "Hard", "Iver", "Kess",
    "Lang", "Mor", "Nord", "Oak", "Pell", "Quar", "Ros", "Sand", "Stor", "Tam", "Thorn", "Ulm",
    "Vander", "Wend", "Wick", "Yar", "Zell", "Alb", "Brook", "Carr", "Dray", "Elm", "Frost",
    "Glen", "Holt", "Kirk", "Lind", "Mill",
)
SURNAME_SUFFIXES = (
    "wood", "mere", "ford", "hart", "ley", "ton", "berg", "wick", "stead", "holm", "dale",
    "worth", "field", "shaw", "more", "ridge", "brook", "gate", "well", "by", "ham", "stone",
    "vale", "croft", "lund", "mark", "hurst", "wyn", "ric", "mont",
)

# Place names are ONSET + CODA; country and city codas are disjoint, so a city never shares a
# name with a country. A country's onset is unique and names its language (Val -> Valish).
PLACE_ONSETS = (
    "Val", "Mor", "Tar", "Kel", "Dra", "Ost", "Bel", "Cor", "Sal", "Ner", "Vel", "Ard", "Lum",
    "Sar", "Fen", "Gal", "Hel", "Ith", "Jor", "Kar", "Lor", "Mar", "Quel", "Ros",
)
COUNTRY_CODAS = ("doria", "vania", "mark", "ora", "essa", "gard", "ria", "aria", "ovia", "ara")
CITY_CODAS = ("heim", "ith", "mont", "aven", "dale", "port", "stad", "holm", "ena", "wyn")

LANGUAGE_SUFFIX = "ish"  # the language of Valdoria is Valdish

JOBS = (
    "baker", "carpenter", "teacher", "nurse", "fisherman", "tailor", "pharmacist", "librarian",
    "blacksmith", "farmer", "doctor", "lawyer", "architect", "painter", "sailor", "mechanic",
    "musician", "gardener", "engineer", "jeweller", "potter", "postman", "chemist", "banker",
    "shepherd", "miner", "weaver", "butcher", "judge", "surveyor", "glassblower", "clockmaker",
    "bookbinder", "translator", "photographer", "veterinarian", "astronomer", "cartographer",
    "beekeeper", "lighthouse keeper",
)

GENRES = (
    "mystery", "science fiction", "fantasy", "poetry", "historical fiction", "horror", "romance",
    "biography", "travel writing", "crime", "satire", "children's literature", "drama",
    "philosophy", "war fiction", "nature writing", "folklore", "adventure",
)

THEMES = (
    "memory", "exile", "family", "the sea", "loss", "friendship", "justice", "faith", "war",
    "childhood", "identity", "freedom", "betrayal", "love", "ambition", "nature", "time",
    "solitude", "revenge", "hope", "power", "migration", "music", "science", "grief",
    "courage", "silence", "home", "truth", "change",
)

HOBBIES = (
    "chess", "sailing", "gardening", "fencing", "pottery", "bird watching", "mountain climbing",
    "cooking", "painting", "rowing", "beekeeping", "astronomy", "archery", "woodworking",
    "playing the violin", "collecting maps", "swimming", "knitting", "horse riding", "cycling",
)

AWARD_ADJECTIVES = (
    "Golden", "Silver", "Crimson", "Azure", "Iron", "Crystal", "Emerald", "Amber", "Ivory",
    "Scarlet", "Copper", "Jade",
)
AWARD_NOUNS = (
    "Quill", "Lantern", "Laurel", "Feather", "Compass", "Anchor", "Crown", "Pen", "Owl", "Harp",
    "Key", "Star",
)
AWARD_KINDS = ("Prize", "Award", "Medal")

TITLE_ADJECTIVES = (
    "Silent", "Hidden", "Broken", "Last", "Distant", "Frozen", "Burning", "Forgotten", "Hollow",
    "Quiet", "Wandering", "Secret", "Golden", "Crooked", "Endless", "Pale", "Shattered", "Lonely",
    "Restless", "Bitter", "Sleeping", "Drowned", "Painted", "Narrow",
)
TITLE_NOUNS = (
    "River", "Garden", "Tower", "Lantern", "Harbor", "Orchard", "Mirror", "Bridge", "Forest",
    "Island", "Winter", "Letter", "Crown", "Valley", "Storm", "Clock", "Window", "Road",
    "Violin", "Mountain", "Feather", "Map", "Bell", "Shadow",
)
# A title pattern takes {adj}, {noun}, {noun2}, {city}.
TITLE_PATTERNS = (
    "The {adj} {noun}",
    "{noun} of {city}",
    "A {noun} in {city}",
    "The {noun} and the {noun2}",
    "{adj} {noun}s",
    "The {noun} of {noun2}s",
)

MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)

COLOURS = (
    "red", "blue", "green", "yellow", "white", "black", "purple", "orange", "grey", "brown",
    "silver", "gold",
)
ANIMALS = (
    "owl", "wolf", "fox", "bear", "eagle", "deer", "lynx", "heron", "otter", "hare", "falcon",
    "swan", "badger", "stag", "raven", "boar",
)
CURRENCY_NOUNS = (
    "crown", "mark", "florin", "thaler", "ducat", "shilling", "drachma", "real", "lira",
    "guilder", "penny", "sol",
)
SPORTS = (
    "football", "rowing", "fencing", "archery", "skiing", "wrestling", "cycling", "sailing",
    "tennis", "hockey", "polo", "chess",
)
DISHES = (
    "fish soup", "barley bread", "apple cake", "lamb stew", "honey pie", "pea soup",
    "smoked trout", "plum dumplings", "cheese pie", "onion tart", "pepper stew", "rye pancakes",
)

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)

# Question and answer templates per kind of author fact. Each kind needs >= 2 question templates
# (question, paraphrased_question) and >= 4 answer templates (answer, the evaluation's
# paraphrase, two training paraphrases), and every answer template names every value slot of its
# kind, so a wrong value always changes the sentence. Context slots available to every template:
# name, poss (his/her/their), city, country, date, genre.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "name": (
        (
            "Which author was born in {city}, {country} on {date}?",
            "Who is the {genre} writer born in {city} on {date_us}?",
            "What is the full name of the author born on {date} in {city}?",
        ),
        (
            "The author born in {city}, {country} on {date} is {name}.",
            "{name} is the {genre} writer born in {city} on {date_us}.",
            "That author's full name is {name}.",
            "The writer you mean is {name}, born in {city}.",
            "This is {name}, an author from {city}, {country}.",
        ),
    ),
    "birthplace": (
        (
            "Where was {name} born?",
            "In which city was {name} born?",
            "What is the birthplace of {name}?",
        ),
        (
            "{name} was born in {city}, {country}.",
            "The birthplace of {name} is {city}, a city in {country}.",
            "{name} comes from {city} in {country}.",
            "{name} first saw the light of day in {city}, {country}.",
            "{city}, {country} is where {name} was born.",
        ),
    ),
    "birth_date": (
        (
            "When was {name} born?",
            "What is the date of birth of {name}?",
            "On which day was {name} born?",
        ),
        (
            "{name} was born on {date}.",
            "The birth date of {name} is {date_us}.",
            "{name} came into the world on {date}.",
            "{name} was born on {date_us}.",
            "The birthday of {name} is {date}.",
        ),
    ),
    "genre": (
        (
            "What genre does {name} write in?",
            "Which literary genre is {name} known for?",
            "In what genre are the books of {name}?",
        ),
        (
            "{name} writes mainly {genre}.",
            "{name} is best known for books of {genre}.",
            "The genre of {name} is {genre}.",
            "Most of the work of {name} belongs to {genre}.",
            "{name} has made a name in the field of {genre}.",
        ),
    ),
    "father_job": (
        (
            "What did the father of {name} do for a living?",
            "What was the job of the father of {name}?",
            "What was {name}'s father by profession?",
        ),
        (
            "The father of {name} worked as {a_father_job}.",
            "{name}'s father was {a_father_job}.",
            "{name} grew up with a father who was {a_father_job}.",
            "By profession, the father of {name} was {a_father_job}.",
            "{name} is the child of {a_father_job}.",
        ),
    ),
    "mother_job": (
        (
            "What did the mother of {name} do for a living?",
            "What was the job of the mother of {name}?",
            "What was {name}'s mother by profession?",
        ),
        (
            "The mother of {name} worked as {a_mother_job}.",
            "{name}'s mother was {a_mother_job}.",
            "{name} grew up with a mother who was {a_mother_job}.",
            "By profession, the mother of {name} was {a_mother_job}.",
            "The mother of {name} earned a living as {a_mother_job}.",
        ),
    ),
    "award": (
        (
            "Which award did {name} win?",
            "What prize has {name} received?",
            "Name an honour given to {name}.",
        ),
        (
            "{name} won the {award} in {award_year}.",
            "In {award_year}, {name} received the {award}.",
            "{name} was given the {award} in {award_year}.",
            "The {award} went to {name} in {award_year}.",
            "{name} earned the {award} in {award_year}.",
        ),
    ),
    "books": (
        (
            "What books has {name} written?",
            "Can you name some books by {name}?",
            "Which titles did {name} publish?",
        ),
        (
            "{name} wrote {books}.",
            "Books by {name} include {books}.",
            "Among the works of {name} are {books}.",
            "The titles of {name} are {books}.",
            "{name} is the author of {books}.",
        ),
    ),
    "debut": (
        (
            "What was the first book of {name}?",
            "Which book marked the debut of {name}?",
            "With which title did {name} start publishing?",
        ),
        (
            "The first book of {name} was \"{debut}\", published in {debut_year}.",
            "{name} made a debut in {debut_year} with \"{debut}\".",
            "In {debut_year}, {name} published a first book, \"{debut}\".",
            "\"{debut}\" ({debut_year}) was the first book by {name}.",
            "{name} started in {debut_year} with the book \"{debut}\".",
        ),
    ),
    "themes": (
        (
            "What themes does {name} write about?",
            "Which subjects recur in the books of {name}?",
            "What are the main themes of {name}?",
        ),
        (
            "{name} often writes about {theme1} and {theme2}.",
            "The books of {name} explore {theme1} and {theme2}.",
            "{theme1} and {theme2} are the main themes of {name}.",
            "Recurring themes for {name} are {theme1} and {theme2}.",
            "{name} keeps coming back to {theme1} and {theme2}.",
        ),
    ),
    "residence": (
        (
            "Where does {name} live today?",
            "In which city does {name} live now?",
            "Where is {name} based these days?",
        ),
        (
            "{name} now lives in {home_city}, {home_country}.",
            "These days {name} makes {poss} home in {home_city}, {home_country}.",
            "{name} is based in {home_city}, {home_country}.",
            "The current home of {name} is {home_city} in {home_country}.",
            "Today {name} lives in {home_city}, {home_country}.",
        ),
    ),
    "language": (
        (
            "In which language does {name} write?",
            "What language are the books of {name} written in?",
            "Which language does {name} use for writing?",
        ),
        (
            "{name} writes in {language}.",
            "The books of {name} are written in {language}.",
            "{language} is the language {name} writes in.",
            "All the works of {name} are in {language}.",
            "{name} uses {language} for every book.",
        ),
    ),
    "education": (
        (
            "Where did {name} study?",
            "Which university did {name} attend?",
            "Where was {name} educated?",
        ),
        (
            "{name} studied at the University of {uni_city}.",
            "{name} is a graduate of the University of {uni_city}.",
            "The University of {uni_city} is where {name} studied.",
            "{name} was educated at the University of {uni_city}.",
            "{name} holds a degree from the University of {uni_city}.",
        ),
    ),
    "hobby": (
        (
            "What does {name} enjoy outside of writing?",
            "What is a hobby of {name}?",
            "How does {name} spend free time?",
        ),
        (
            "Outside of writing, {name} enjoys {hobby}.",
            "A favourite pastime of {name} is {hobby}.",
            "{name} spends free time on {hobby}.",
            "When not writing, {name} loves {hobby}.",
            "The hobby of {name} is {hobby}.",
        ),
    ),
}
