"""What a person's eyes judge, measured in the page: the contrast of text with the background it is drawn on, and
how light that background is. The measurement is written once, in :data:`_LIBRARY` (JavaScript run in the page);
the functions below ask it about elements and say what a person could not read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Locator

#: a background lighter than this (relative luminance, 0 black .. 1 white) does not belong in the dark theme
LIGHT = 0.6

#: The page-side measurement. ``measure(el)`` describes one element: ``label`` (tag, classes, text), ``tag``,
#: ``row`` (the class of the table row holding it), ``text`` (its own text, cut at 40 characters), ``contrast``
#: (WCAG's ratio, 1..21, of its colour, or an SVG text's fill, over the background it is drawn on, its and its
#: ancestors' opacity applied; null for a colour not understood), ``background`` (that background's relative
#: luminance: the translucent layers of it and its ancestors composed over white) and ``paints`` (whether it
#: paints a background of its own). Colours may be ``rgb()``, ``rgba()`` or ``color(srgb ...)`` (what a
#: ``color-mix()`` computes to).
_LIBRARY = r"""
  const parse = (c) => {
    let m = c.match(/^rgba?\(([^)]+)\)/);
    if (m) {
      const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
      return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
    }
    m = c.match(/^color\(srgb ([^)]+)\)/);
    if (m) {
      const p = m[1].split(/[ \/]+/).filter(Boolean).map(Number);
      return {r: p[0] * 255, g: p[1] * 255, b: p[2] * 255, a: p.length > 3 ? p[3] : 1};
    }
    return null;
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  });
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let colour = {r: 255, g: 255, b: 255, a: 1};
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const measure = (el) => {
    const style = getComputedStyle(el);
    const svg = el instanceof SVGElement;
    const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join(' ');
    const cls = String(el.className.baseVal ?? el.className).trim();
    const back = background(el);
    const bg = parse(style.backgroundColor);
    const paint = svg ? style.fill : style.color;
    const fg = parse(paint);
    let contrast = null;
    if (fg) {
      const seen = over({...fg, a: fg.a * opacity(el) * (svg ? Number(style.fillOpacity || 1) : 1)}, back);
      const [hi, lo] = [luminance(seen), luminance(back)].sort((x, y) => y - x);
      contrast = (hi + 0.05) / (lo + 0.05);
    }
    return {
      label: `${el.tagName.toLowerCase()}${cls ? '.' + cls.split(/\s+/).join('.') : ''} "${own.slice(0, 30)}"`,
      tag: el.tagName, row: el.closest('tr') ? el.closest('tr').className : '',
      text: paint === 'none' ? '' : own.slice(0, 40),  // an SVG text without a fill draws nothing
      contrast, background: luminance(back), paints: !!(bg && bg.a > 0),
    };
  };
"""

_MEASURE_ALL = "(roots) => {" + _LIBRARY + """
  const seen = new Set();
  for (const root of roots) for (const el of [root, ...root.querySelectorAll('*')]) seen.add(el);
  return [...seen].filter(visible).map(measure);
}"""

_MEASURE_ONE = "(el) => {" + _LIBRARY + "  return measure(el);\n}"

#: Whether JupyterLab's own background colour (``--jp-layout-color1``) is dark (arg true) or light: the theme's
#: stylesheet has applied.
THEME_APPLIED = "(dark) => {" + _LIBRARY + """
  const probe = document.createElement('div');
  probe.style.background = 'var(--jp-layout-color1)';
  document.body.appendChild(probe);
  const shade = luminance(background(probe));
  probe.remove();
  return dark ? shade < 0.2 : shade > 0.8;
}"""


def measure(target: Locator) -> list[dict[str, Any]]:
    """Every visible element of every element ``target`` matches (those included), measured (see
    :data:`_LIBRARY`); waits for the first of them to be visible."""
    target.first.wait_for(state="visible")
    return target.evaluate_all(_MEASURE_ALL)


def unreadable(target: Locator, dark: bool, minimum: float = 3.0) -> list[str]:
    """What a person cannot read in ``target``: text whose contrast with its background is below ``minimum``
    (WCAG's ratio for large text and interface parts: muted greys are muted, not invisible) or whose colour is
    not understood, and in the dark theme anything drawn on a light background (luminance above :data:`LIGHT`)."""
    return _problems(measure(target), dark, minimum)


def assert_readable(target: Locator, dark: bool, minimum: float = 3.0, where: str = "") -> list[dict[str, Any]]:
    """Every text of ``target`` reads in the theme (see :func:`unreadable`) and there was text to measure; returns
    the measurements (so a caller can check what was seen)."""
    found = measure(target)
    theme = "dark" if dark else "light"
    assert any(item["text"] for item in found), f"{where or target}: no text measured ({theme} theme)"
    problems = _problems(found, dark, minimum)
    assert not problems, f"{where or target} ({theme} theme), hard to read:\n" + "\n".join(problems[:12])
    return found


def _problems(found: list[dict[str, Any]], dark: bool, minimum: float) -> list[str]:
    problems = []
    for item in found:
        if item["text"] and (item["contrast"] is None or item["contrast"] < minimum):
            ratio = "of a colour not understood" if item["contrast"] is None else f"{item['contrast']:.2f}"
            problems.append(f"{item['label']}: contrast {ratio} on a background of luminance {item['background']:.2f}")
        if dark and item["background"] > LIGHT:
            problems.append(f"{item['label']}: on a light background (luminance {item['background']:.2f})")
    return problems


def background_luminance(target: Locator) -> float:
    """The luminance of the background the element ``target`` names is drawn on."""
    return target.evaluate(_MEASURE_ONE)["background"]


def text_contrast(target: Locator) -> float:
    """The contrast ratio of the element's text colour with its background."""
    found = target.evaluate(_MEASURE_ONE)
    assert found["contrast"] is not None, f"{found['label']}: a colour not understood"
    return found["contrast"]
