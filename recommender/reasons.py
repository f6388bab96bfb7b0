"""What each result of ``recommendations`` and ``also`` says about why it is there.

``reasons.source`` names the signal that brought it, one of :data:`SOURCES`, and ``reasons.text`` says it in
a sentence a shop can show as is ("because you viewed Coral reef dive — shared topics: coral reef, scuba
diver", "often viewed with Beach towel", "trending in sales that end today", "popular right now").
Popular-only and fallback results say so. The older fields (``topics``, ``because_of``, ``popular``) stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from recommender.events import DAY

SOURCES = ("content", "collaborative", "sequence", "trending", "popular")
#: The hybrid's own source names -> what clients see.
FROM_MODEL = {"als": "collaborative", "knn": "collaborative", "sequence": "sequence", "content": "content",
              "trending": "trending", "popular": "popular"}
#: How a user's event reads in "because you ... X".
VERBS = {"purchase": "bought", "add_to_cart": "added", "click": "looked at", "view": "viewed"}


def _topic_names(topics: Sequence[dict], top: int = 2) -> str:
    return ", ".join(t["name"] for t in topics[:top])


def personal(source: str, title: str, event_type: str = "view", topics: Sequence[dict] = ()) -> str:
    """The sentence for a result a history item brought (content, collaborative or sequence)."""
    if source == "collaborative":
        return f"often viewed with {title}"
    if source == "sequence":
        return f"often viewed next after {title}"
    text = f"because you {VERBS.get(event_type, 'viewed')} {title}"
    names = _topic_names(topics)
    return f"{text} — shared topics: {names}" if names else text


def trending(ends_at: float | None, now: float) -> str:
    if ends_at is not None and now <= ends_at < now + DAY:
        return "trending in sales that end today"
    if ends_at is not None:
        return "trending in sales on now"
    return "trending right now"


def popular(has_history: bool) -> str:
    return "popular right now" if has_history else "popular right now (no history yet)"


def similar(title: str, topics: Sequence[dict], why: str) -> str:
    """A content result standing in for co-occurrence (``also`` on a new item, or before any training)."""
    names = _topic_names(topics)
    text = f"looks like {title}" + (f" — shared topics: {names}" if names else "")
    return f"{text} ({why})"


FALLBACK = "a fallback: nothing more personal or popular fits these filters"


def reasons(source: str, text: str, topics: Sequence[dict] = (), because_of: Sequence[str] = (), **more) -> dict:
    """The ``reasons`` object of one result."""
    assert source in SOURCES, source
    return {"topics": list(topics), "because_of": list(because_of), "popular": source in ("popular", "trending"),
            "source": source, "text": text, **more}
