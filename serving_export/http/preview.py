"""`GET /preview/{user_id}`: a user's stored page as HTML a person can look at.

One row per carousel (slot, title, family, score), one card per item (title, category, brand,
price, the reason it was chosen, score and propensity), the export's ds and model version.
Every value from the export is HTML-escaped: item titles may contain markup. Nothing is
recomputed: the page is the stored JSON value, the item fields come from the export's item table.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
header p{margin:.2rem 0;color:#555}
section{margin:1.2rem 0}
h2{font-size:1.05rem;margin:.3rem 0}
h2 small{color:#777;font-weight:normal}
ol{display:flex;gap:.6rem;list-style:none;padding:0;margin:0;overflow-x:auto}
li{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem;min-width:9rem;
max-width:11rem;font-size:.85rem}
li b{display:block;margin-bottom:.2rem}
.reason{display:inline-block;background:#eef;border-radius:3px;padding:0 .3rem}
.explore{background:#fed}
"""


def _text(value: Any) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _price(value: Any) -> str:
    return "" if value is None else f"{float(value):.2f}"


def render_preview(
    page: dict[str, Any], item: Callable[[str], dict[str, Any] | None], *, fallback: bool
) -> bytes:
    """HTML for one stored page; `item(item_id)` gives the item's display fields or None."""
    user = _text(page.get("user_id"))
    head = (
        f"<header><h1>Homepage of {user}</h1>"
        f'<p>export ds <span id="ds">{_text(page.get("ds"))}</span> · model version '
        f'<span id="model-version">{_text(page.get("model_version"))}</span>'
        + (" · <strong>default page (fallback)</strong>" if fallback else "")
        + "</p></header>"
    )
    rows = []
    for car in page.get("carousels", []):
        cards = []
        for it in car.get("items", []):
            info = item(str(it.get("item_id"))) or {}
            reason = _text(it.get("reason"))
            cls = "reason explore" if it.get("reason") == "explore" else "reason"
            cards.append(
                f'<li data-item="{_text(it.get("item_id"))}">'
                f"<b>{_text(info.get('title') or it.get('item_id'))}</b>"
                f"{_text(info.get('category_id'))} · {_text(info.get('brand'))}<br>"
                f"price {_price(info.get('price'))}<br>"
                f'<span class="{cls}">{reason}</span><br>'
                f"#{_text(it.get('rank'))} · score {_text(it.get('score'))}"
                f" · p {_text(it.get('propensity'))}</li>"
            )
        rows.append(
            f'<section data-slot="{_text(car.get("slot"))}">'
            f"<h2>{_text(car.get('slot'))}. {_text(car.get('title'))} "
            f"<small>{_text(car.get('family'))} · score {_text(car.get('score'))}</small></h2>"
            f"<ol>{''.join(cards)}</ol></section>"
        )
    body = "".join(rows) or "<p>This page has no carousels.</p>"
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Homepage preview: {user}</title><style>{STYLE}</style></head>"
        f"<body>{head}<main>{body}</main></body></html>"
    )
    return html.encode()
