"""Word lists the name recognizers read: given names, titles, relations, greetings, and words that
look like names but are not. Written for this project (lower case; the recognizers compare
lower-cased words).

GIVEN_NAMES: common given names of English, German, French, Spanish, Italian, Dutch, Nordic, Polish,
Portuguese, Irish, Indian, Chinese, Japanese, Korean, Arabic, Turkish, African and other speakers.
A capitalized given name followed by a capitalized word is a name ("Sven Olsen"); so is a given
name alone, unless it is also an ordinary word, a place, a brand or a language (AMBIGUOUS: "Will",
"Grace", "April", "Jordan", "Julia", "Claude"), and so is a lower-case given name after a cue
("tell sarah miller", "hey its jenny").
"""

from __future__ import annotations

__all__ = ["AMBIGUOUS", "GIVEN_NAMES", "NOT_NAMES", "PLACE_WORDS", "RELATIONS", "TITLES"]

GIVEN_NAMES = frozenset(
    """
aaron abby abdul abdullah abigail adam adrian adriana agnieszka ahmed aidan aisha akira alan alberto alejandra
alejandro aleksandra alessandra alessandro alex alexander alexandra alexis alfie alfred ali alice alicia alina
alison amanda amara amelia amir amit amy ana anders andrea andreas andrei andres andrés andrew andy angela angelika
anita anja ann anna anne anneke annika anthony antoine anton antonio anya arjun arnaud arne arthur arun astrid
aurelie aurélie ayesha barbara bart bastian beatrice beatriz ben benedikt benjamin bernard bernd bethany bianca
birgit bjorn björn blessing bogdan bram brandon brendan brian bridget bruno bryan caitlin camila camille carla
carlos carmen carol caroline carsten catalina catherine cecilia celine céline charles charlie chen chiara chidi
chloe chloé chris christian christina christine christopher chukwuemeka cindy claire clara claudia colin connor
conor constance cristina daan dagmar daisuke dan daniel daniela danielle daniele dario darius david debbie deborah
declan deepak denis dennis derek dev diana diego dimitri dirk dmitri dominik dominique donna doris dorothy douglas
duncan edith edoardo eduardo edward eleanor elena eleni elif elijah elisa elisabeth elise eliza elizabeth ella ellen
elliot emeka emil emilia emilie émilie emily emma emmanuel enrique enzo eric erik erin esther ethan eva evelyn fabian
fabio fatima fatma federica federico felix femke fernanda fernando filip finn fiona florian francesca francesco
francisco françois francois frank franziska freddie frederik freya gabriel gabriela gabriele gareth gary gaurav
george georg gerhard gert giacomo gianluca gillian giorgio giovanni girish giulia giuseppe gonzalo graham gregor
gregory greta gunther günther gustav hamza hana hannah hans harald harold harriet harry hassan heidi heike heinz
helen helena helga henrik henry hermann hideo hiroshi hugo ian ibrahim ida ignacio igor ilse imran ines inés
ingrid irene irina isaac isabel isabella isabelle ismail ivan jacob jake james jamie jan jana jane janet janine
jannik jasmin jason javier jean jeanne jelle jennifer jenny jens jeroen jesper jessica jesús jiang joan joanna joao
joão jochen joe joel johan johann johanna john jon jonas jonathan jordi jorge jose josé josef joseph joshua joost
juan judith julian julien julie juliette jun jürgen jurgen justin kai karen karin karl karolina kasper kate
katharina katherine kathleen katja katrin kay keith ken kenji kenneth kevin khalid kim klaus kofi kristin kwame
kyle lars laura lauren laurent lea léa leah leila lena leo leon leonardo lewis li liam lieke lin linda lisa
lorenzo lotte louis louise luca lucas lucía lucia lucy ludovic luis luisa lukas łukasz lukasz maarten magdalena
mai malik manuel manuela marc marcel marcello marco marcos marcus margaret margarethe maria maría marianne marie
marina mario marion marjolein mark marta martha martin martina mary maryam mateo matteo matthew matthias maximilian
megan mehmet mei melanie melissa mia michael michaela michel michelle miguel mika mikael mike milan milena minh
miriam mohamed mohammad mohammed monika monique morgan moritz muhammad mustafa nadia nadine nancy naomi natalia
natalie nathalie nathan neha nicola nicolas nicole niamh niels nikhil nikolai nils nina noah noemi noor nora
norbert oliver olivia olivier omar oscar óscar oskar pablo pamela paola paolo pascal patricia patrick paul paula
pauline pedro peter petra philip philipp philippe pierre pieter pietro pooja prakash priya rachel rafael rahul
raj rajesh ralf ramon ramón rana raphael raúl raul rebecca renate rené rene ricardo richard rik rita robert roberta
roberto robin rodrigo roger roland roman ronald rosa ruben rubén rudolf rui ruth ryan sabine sabrina sadia sakura
salma sam samantha samir samuel sandra sanjay sanne santiago sara sarah sascha satoshi sean sebastian sebastián
sergei sergio shanice sharon shirin shreya siddharth silke silvia simon simona simone siobhan sipho siti sofia
sofía sonia sophia sophie stefan stefanie stefano stephanie stephen steven susan susanne suzanne sven svetlana
sylvie takashi tamara tanja tanya tariq teresa thabo theo thomas thijs thorsten tiago tim timo tobias tom tomás
tomasz toni tony torsten ulrich ursula uwe valentina valentin vanessa vera veronica victor vikram vincent
vincenzo viktor vivek walter wei weronika werner wim wojciech wolfgang xavier xiao yan yasmin yusuf yuki yuto
zainab zeynep zhang zofia zoe zoë
""".split()
)

# Given names that are also ordinary words, places, brands, products or languages: never a name
# on their own (a second capitalized word, a title or a cue makes them one).
AMBIGUOUS = frozenset(
    """
will grace hope faith joy april may june summer autumn rose lily iris ivy daisy holly heather ginger sage amber
ruby pearl crystal jack mark bill pat art sterling victoria florence georgia virginia carolina austin dallas
jordan paris chelsea sydney brooklyn madison charlotte adelaide rich drew chase hunter mason cash dean gene guy
max ray rusty frank earl don angel eve dawn robin sky kit penny candy cherry honey sunny storm rain misty star
major duke king prince lane wade reed cliff glen dale heath forest rocky mercedes tesla apple siri alexa cortana
claude gemini jasper julia ada pascal haskell kotlin swift elixir dart sam ben tim tom jan kim lin li mai chen
zhang jun kai lea leo ian dan jean mika noor rana nina sonia dana toni rene rené ida eric karl lars
""".split()
)

# Titles and forms of address before a name.
TITLES = (
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof",
    "professor",
    "sir",
    "dame",
    "lady",
    "lord",
    "rev",
    "reverend",
    "herr",
    "frau",
    "monsieur",
    "madame",
    "mme",
    "mlle",
    "señor",
    "señora",
    "senor",
    "senora",
    "sr",
    "sra",
    "srta",
    "doña",
    "signor",
    "signora",
    "sig",
    "sig.ra",
    "dott",
    "dottor",
    "dottore",
    "dottoressa",
    "dhr",
    "mevr",
    "meneer",
    "mevrouw",
    "mw",
    "uncle",
    "aunt",
    "auntie",
    "grandma",
    "grandpa",
    "granny",
    "nurse",
    "officer",
    "coach",
    "tante",
    "onkel",
    "oma",
    "opa",
    "tía",
    "tío",
    "zia",
    "zio",
    "doctor",
    "docteur",
)

# Relation words: "my manager Daniel Okafor", "mon chef, Olivier Martin", "il mio amico Francesco".
RELATIONS = (
    "wife",
    "husband",
    "son",
    "daughter",
    "mother",
    "mom",
    "mum",
    "mother-in-law",
    "father",
    "father-in-law",
    "dad",
    "brother",
    "sister",
    "friend",
    "best friend",
    "boss",
    "manager",
    "colleague",
    "coworker",
    "co-worker",
    "neighbour",
    "neighbor",
    "landlord",
    "landlady",
    "tenant",
    "uncle",
    "aunt",
    "grandma",
    "grandmother",
    "grandpa",
    "grandfather",
    "partner",
    "boyfriend",
    "girlfriend",
    "fiancé",
    "fiancée",
    "fiance",
    "fiancee",
    "ex",
    "intern",
    "cousin",
    "nephew",
    "niece",
    "teacher",
    "doctor",
    "dentist",
    "lawyer",
    "client",
    "customer",
    "assistant",
    "student",
    "patient",
    "kid",
    "child",
    "baby",
    "roommate",
    "flatmate",
    "supervisor",
    "employee",
    "contractor",
    "bf",
    "gf",
    "bff",
    "hubby",
    "wifey",
    "bestie",
    "sis",
    "bro",
    "mate",
    "kollege",
    "kollegin",
    "chef",
    "chefin",
    "freund",
    "freundin",
    "mann",
    "sohn",
    "tochter",
    "bruder",
    "schwester",
    "nachbar",
    "nachbarin",
    "vermieter",
    "ami",
    "amie",
    "collègue",
    "frère",
    "sœur",
    "fils",
    "fille",
    "voisin",
    "voisine",
    "patron",
    "jefe",
    "jefa",
    "amigo",
    "amiga",
    "hermano",
    "hermana",
    "hijo",
    "hija",
    "vecino",
    "vecina",
    "amico",
    "amica",
    "capo",
    "collega",
    "fratello",
    "sorella",
    "figlio",
    "figlia",
    "vicino",
    "vriend",
    "vriendin",
    "baas",
    "zus",
    "broer",
    "buurman",
    "buurvrouw",
    "moeder",
    "vader",
)

# Capitalized words that the small English NER model calls a PERSON in ordinary text, and words a
# cue may be followed by that are no name ("Dear Hiring Manager", "Hi there", "Ask Siri").
NOT_NAMES = frozenset(
    """
hiring manager sir madam madame team all everyone everybody customer customers colleagues friends there folks
guys support sales admin user users reader readers world you yours sirs tutor assistant bot chatgpt gpt claude
gemini copilot siri alexa cortana bard llama mistral python django flask excel word outlook teams slack zoom
kubernetes terraform docker jupyter pandas numpy react angular vue linux windows ubuntu android iphone ipad
kindle echo spotify netflix google amazon microsoft apple tesla meta openai anthropic github gitlab jira
confluence notion figma photoshop gimp chrome firefox safari edge postgres postgresql mysql redis mongodb
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december moon sun earth mars venus jupiter saturn prejudice pride louvre thanks
thank regards best cheers hello hi hey dear sincerely yours kind warm good morning evening afternoon night
vielen dank ihre hilfe merci gracias grazie bedankt danke bitte please ok okay yes no new old great little
the a an and or of to in on for with from by at as is are was were be this that these those it its my our your
his her their we they he she i me us them him what which who how why where when here now then today tomorrow
""".split()
)

# Words that make a capitalized phrase a place or an institution, not a person: "Victoria Falls",
# "Lake Victoria", "Elizabeth Line", "Washington Square", "St. Mary's Hospital".
PLACE_WORDS = frozenset(
    """
falls lake lakes mount mountain mountains mt river rivers island islands isle valley beach street road avenue
square bridge station line airport harbour harbor tower palace museum gallery cathedral chapel abbey college
university school academy institute hospital clinic centre center stadium arena theatre theater hotel gardens
desert sea ocean gulf coast canyon glacier peak cape county state city district province region republic kingdom
""".split()
)  # not words that are also common surnames: Park, Hall, Hill, Lane, Church, Field, Wood
