"""Word counts of the written pieces, one rule for every study and for the pipeline's report.

A word is a run of characters that starts with a letter or digit, so that a number ("0.926"), an interval ("[0.90,
0.95]" is two words) or a name ("all-MiniLM-L6-v2") counts as a reader counts it, and Markdown markup does not count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_MARKUP = re.compile(r"[*_`|#]")
_WORD = re.compile(r"[A-Za-z0-9][\w'.,%+\-/()=\[\]]*")


def count_words(text: str) -> int:
    """The words of ``text`` (Markdown emphasis and table syntax aside)."""
    return len(_WORD.findall(_MARKUP.sub(" ", text)))


def fit_sentences(sentences: Sequence[str], optional: Sequence[int], max_words: int) -> str:
    """The sentences joined, after dropping the ``optional`` ones (by index, the last first) while the text has more
    than ``max_words`` words."""
    kept = list(sentences)
    for i in sorted(optional, reverse=True):
        if count_words(" ".join(kept)) <= max_words:
            break
        kept[i] = ""
    return " ".join(x for x in kept if x)
