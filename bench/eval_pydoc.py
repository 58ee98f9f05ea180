"""A retrieval eval built from text every Python carries: the language reference topics of
`pydoc_data.topics` (what `help("with")` shows), cut into passages of up to 1,000 characters
along paragraph breaks (exact duplicates removed: the `compound` topic repeats `if`, `for`,
`try`, ... verbatim).

Each question is paraphrased, the way a person would ask it, and names its answer by an
*anchor*: a string found in the answering passage. Every passage that contains the anchor
counts as relevant (a fact stated twice, in two topics, is found either way), so the eval
needs no passage ids that would break when the topics text changes between Python
versions; a question whose anchor is missing from this Python's topics is left out and
counted.
"""

from __future__ import annotations

# The question table keeps one pair a line.
# ruff: noqa: E501
import re
from dataclasses import dataclass

PASSAGE_CHARS = 1000

# (question, topic, anchor): the anchor lies in the passage that answers the question.
PAIRS: list[tuple[str, str, str]] = [
    ("Does an assert statement still run when Python is started with optimisation turned on?", "assert", "emits no code for an\nassert statement when optimization is requested"),
    ("What happens to the loop variable after I leave a loop early?", "break", "the loop control target\nkeeps its current value"),
    ("How do I rebind a variable that belongs to an enclosing function, not the module?", "nonlocal", "refer to\npreviously bound variables in the nearest enclosing scope"),
    ("Is there a statement that does nothing, to use as a placeholder?", "pass", "null operation"),
    ("What value does a function give back if it ends without an explicit result?", "return", 'else "None" is\nsubstituted'),
    ("How do I write a small anonymous function inline?", "lambda", "used to create\nanonymous functions"),
    ("When does the else block after a for loop run?", "for", 'without executing the "else" clause’s suite'),
    ("How do I make an exception chain so the traceback shows the original cause?", "raise", "The above exception was the direct cause"),
    ("How can I attach my own traceback object to an exception I create?", "raise", "with_traceback()"),
    ("How does an exception handler choose which except clause matches?", "try", "search for an\nexception handler is started"),
    ("How do I handle several exceptions bundled together in one group?", "try", "handling part of the\nexception group"),
    ("Which objects count as false in an if condition?", "truth", "most of the built-in objects considered false"),
    ("Why does 's or default' return a string rather than True or False?", "booleans", "return the last evaluated\nargument"),
    ("Can I put underscores in a number literal to group digits?", "integers", "They can be used to group digits"),
    ("Are leading zeros allowed in decimal integers?", "integers", "leading zeros in a non-zero decimal number are not allowed"),
    ("How do I write a complex number with a real and an imaginary part?", "imaginary", "To create a complex\nnumber with a nonzero real part"),
    ("Why does -1**2 give -1 instead of 1?", "power", "binds more tightly than unary operators on its\nleft"),
    ("What happens if I raise zero to a negative exponent?", "power", 'Raising "0.0" to a negative power'),
    ("What sign does the remainder of % have with negative numbers?", "binary", "always yields a result with the same sign"),
    ("How are integer division and remainder related to each other?", "binary", "x == (x//y)*y + (x%y)"),
    ("How do I merge two mappings inside a dictionary literal?", "dict", "denotes *dictionary unpacking*"),
    ("In a dict comprehension, is the key computed before the value?", "dict", "the key is evaluated before the value"),
    ("Can I compare several values in one expression like a < b < c?", "comparisons", "Comparisons can be chained arbitrarily"),
    ("Why is a not-a-number float not equal to itself?", "comparisons", "The not-a-number values"),
    ("How do I check whether two names point to the very same object?", "comparisons", "test for an object’s identity"),
    ("How does 'x in obj' work for my own class that only defines iteration?", "in", 'which do not define "__contains__()" but do\ndefine "__iter__()"'),
    ("How do I prevent instances from getting a per-instance attribute dictionary to save memory?", "attribute-access", "allow us to explicitly declare data members"),
    ("Which method is called only when normal attribute lookup fails?", "attribute-access", '"__getattr__()" is not called.  (This is an intentional asymmetry'),
    ("Can a module define a function that is called for missing attributes?", "attribute-access", "customize access to module attributes"),
    ("Why can't objects of my class be used as dict keys after I defined equality?", "customization", 'will have its "__hash__()" implicitly set to "None"'),
    ("Is the finaliser method guaranteed to be called when the interpreter exits?", "customization", 'It is not guaranteed that "__del__()" methods are called'),
    ("How do I pause my program and drop into the debugger at a specific line?", "debugger", 'The built-in "breakpoint()", when called with'),
    ("Can I put debugger commands in a startup file that runs automatically?", "debugger", 'If a file ".pdbrc" exists in the user’s home directory'),
    ("How do I inspect a crashed program after an unhandled exception with the debugger?", "debugger", "pdb.post_mortem(traceback=None)"),
    ("How can an object be used with the with statement?", "context-managers", "defines the runtime context to\nbe established"),
    ("How can my context manager swallow an exception raised inside the block?", "context-managers", "wishes to suppress the\n   exception"),
    ("What do I write to iterate over an asynchronous iterator?", "async", "allows convenient iteration over\nasynchronous iterables"),
    ("How do decorators on a class get applied?", "class", "Foo = f1(arg)(f2(Foo))"),
    ("When are default argument values computed, at definition or at each call?", "function", "Default parameter values are evaluated from left to right"),
    ("How do I declare parameters that can only be passed by position?", "function", "may only be passed by positional arguments"),
    ("What does the ellipsis literal three dots refer to?", "bltin-ellipsis-object", 'It is written as "Ellipsis" or "..."'),
    ("How does Python find the object when a name is used inside a nested function?", "naming", "nearest enclosing scope"),
    ("Why do attribute names starting with two underscores get changed inside a class?", "atom-identifiers", "Private name mangling"),
    ("How are mixed int and float operands converted before arithmetic?", "conversions", "the other is converted to"),
    ("Which slice bounds are used when I leave out the start or the end?", "slicings", "The semantics for a slicing"),
    ("How do I pad a numeric string with zeros on the left?", "string-methods", "str.zfill(width)"),
    ("How do I split a string at the first occurrence of a separator into three parts?", "string-methods", "str.partition(sep)"),
    ("How do I compare strings ignoring case, including special letters like the German sharp s?", "string-methods", "str.casefold()"),
    ("How do I remove a fixed beginning from a string if it is there?", "string-methods", "str.removeprefix(prefix, /)"),
    ("How do I format a number with a comma as the thousands separator?", "formatstrings", "thousands separator"),
    ("How do I get a value from a dict and insert a default if the key is missing?", "typesmapping", "setdefault(key[, default])"),
    ("Do dictionaries remember the order in which keys were added?", "typesmapping", "Dictionaries preserve insertion order"),
    ("Does sorting a list keep equal items in their original order?", "typesseq", '"sort()" method is guaranteed to be stable'),
    ("What does multiplying a list of lists by a number do, and why do changes show up everywhere?", "typesseq", "they are referenced multiple times.\n   This often haunts"),
    ("How do I produce the sequence of numbers 0 to 9 without storing them all?", "typesseq", 'The advantage of the "range" type over a regular "list" or "tuple"'),
]  # fmt: skip


@dataclass(frozen=True)
class Eval:
    passages: list[str]
    questions: list[str]
    relevant: list[frozenset[int]]  # per question, the indexes of its answering passages
    skipped: int  # questions whose anchor this Python's topics text lacks


def split_passages(text: str, limit: int = PASSAGE_CHARS) -> list[str]:
    """Paragraphs packed into passages of at most `limit` characters; a longer paragraph
    is cut at a line break (else a space) in its second half."""
    out: list[str] = []
    current = ""
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        while len(paragraph) > limit:
            cut = paragraph.rfind("\n", 0, limit)
            if cut < limit // 2:
                cut = paragraph.rfind(" ", 0, limit)
            if current:
                out.append(current)
                current = ""
            out.append(paragraph[:cut])
            paragraph = paragraph[cut:].strip()
        if current and len(current) + 2 + len(paragraph) > limit:
            out.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        out.append(current)
    return out


def build() -> Eval:
    from pydoc_data.topics import topics

    passages = list(
        dict.fromkeys(p for name in sorted(topics) for p in split_passages(topics[name]))
    )
    questions, relevant, skipped = [], [], 0
    for question, topic, anchor in PAIRS:
        hits = frozenset(i for i, p in enumerate(passages) if anchor in p)
        if anchor not in topics.get(topic, "") or not hits:
            skipped += 1
            continue
        questions.append(question)
        relevant.append(hits)
    return Eval(passages, questions, relevant, skipped)
