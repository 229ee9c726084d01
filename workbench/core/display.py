"""How results show themselves: one short line as `repr`, and a table in a notebook.

Every public result type has a `__repr__` of one line (what it is, its shape, its headline
number with its method and n) and, through `Tabled`, an `_repr_html_` that shows that line over
the first rows of its `to_frame()`, so a notebook cell never prints hundreds of lines of tensors.
"""

from __future__ import annotations

import html

MAX_TEXT = 40  # characters of a prompt or continuation shown in a repr
MAX_ROWS = 20  # rows of `to_frame()` shown in a notebook


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`repr(text)`, cut to about `limit` characters with an ellipsis."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[: limit - 1]) + "…"


class Tabled:
    """Mixin: in a notebook, the one-line repr over the first `MAX_ROWS` rows of `to_frame()`."""

    def _repr_html_(self) -> str:
        head = f"<p><code>{html.escape(repr(self))}</code></p>"
        try:
            frame = self.to_frame()
        except TypeError:  # a to_frame that needs arguments (which head, which metric)
            return head
        return head + frame.to_html(max_rows=MAX_ROWS, index=False)
