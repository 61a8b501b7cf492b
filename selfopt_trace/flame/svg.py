"""A Profile as a flamegraph SVG: self-contained (inline style and script), opens in any browser.

The root is at the bottom; a frame's width is the time of the samples it was on the stack in.
Hover a frame: its function, file, time and share; click: zoom to it; click the title: reset.
A differential profile (`flame --diff A B`) is drawn with widths of both runs together, so that
what vanished still shows, coloured by the change: red grew, blue shrank, white the same.
"""

from __future__ import annotations

import zlib
from html import escape

from .data import Frame, Profile

WIDTH = 1200
ROW = 17
PAD_TOP = 44
PAD_BOTTOM = 8
MIN_PX = 0.3  # narrower frames are not drawn (their time still counts in their parents)
CHAR_PX = 7.0  # average width of a 12 px character, to cut labels


class _Node:
    __slots__ = ("frame", "after", "before", "children")

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame
        self.after = 0.0  # ns (the run's, or the diff's second run)
        self.before = 0.0  # ns in the diff's first run
        self.children: dict[Frame, _Node] = {}


def _tree(profile: Profile) -> _Node:
    root = _Node(None)
    for stacks, side in ((profile.stacks, "after"), (profile.before or {}, "before")):
        for frames, (_, ns) in stacks.items():
            node = root
            setattr(node, side, getattr(node, side) + ns)
            for frame in frames:
                child = node.children.get(frame)
                if child is None:
                    child = node.children[frame] = _Node(frame)
                setattr(child, side, getattr(child, side) + ns)
                node = child
    return root


def render_svg(profile: Profile) -> str:
    diff = profile.before is not None
    root = _tree(profile)
    total = root.after + root.before if diff else root.after
    rows: list[tuple[int, float, float, _Node]] = []  # depth, x (px), width (px), node
    depth_max = 0
    stack = [(root, 0, 0.0)]
    while stack:
        node, depth, x = stack.pop()
        width = ((node.after + node.before) if diff else node.after) / total * WIDTH if total else 0
        if width < MIN_PX:
            continue
        rows.append((depth, x, width, node))
        depth_max = max(depth_max, depth)
        offset = x
        for child in sorted(node.children.values(), key=lambda n: (n.frame[0], n.frame[1])):
            stack.append((child, depth + 1, offset))
            offset += ((child.after + child.before) if diff else child.after) / total * WIDTH if total else 0
    height = PAD_TOP + (depth_max + 1) * ROW + PAD_BOTTOM
    frames = "".join(_frame(depth, x, width, node, root, diff, height) for depth, x, width, node in rows)
    subtitle = " · ".join(profile.notes + [f"{root.after / 1e6:.1f} ms sampled" if not diff else
                                            "red: grew, blue: shrank (width: both runs)"])
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH + 20}" height="{height}" viewBox="0 0 {WIDTH + 20} {height}" data-frames="{len(rows)}">
<style>
text {{ font: 12px Verdana, Helvetica, Arial, sans-serif; fill: #1d2330; }}
.f {{ cursor: pointer; }} .f:hover rect {{ stroke: #1d2330; stroke-width: 0.6; }}
#title {{ font-size: 15px; font-weight: bold; cursor: pointer; }} #sub, #details {{ fill: #4b5563; }}
</style>
<rect x="0" y="0" width="{WIDTH + 20}" height="{height}" fill="#fbfbf7"/>
<text id="title" x="10" y="18">{escape(("Differential flamegraph: " if diff else "Flamegraph: ") + profile.title)}</text>
<text id="sub" x="10" y="34">{escape(subtitle)}</text>
<text id="details" x="{WIDTH + 10}" y="34" text-anchor="end"> </text>
<g id="frames" transform="translate(10,0)">{frames}</g>
<script><![CDATA[{_SCRIPT}]]></script>
</svg>
"""


def _frame(depth: int, x: float, width: float, node: _Node, root: _Node, diff: bool, height: int) -> str:
    y = height - PAD_BOTTOM - (depth + 1) * ROW
    if node.frame is None:
        label, tip, color = "all", "all samples", "#d9d2c3"
    else:
        function, file = node.frame
        label = f"{function} ({file.rsplit('/', 1)[-1]})" if file else function
        tip = f"{function}\n{file}" if file else function
        color = _diff_color(node) if diff else _color(function)
    if diff:
        tip += f"\nbefore {node.before / 1e6:.1f} ms -> after {node.after / 1e6:.1f} ms ({(node.after - node.before) / 1e6:+.1f} ms)"
    else:
        tip += f"\n{node.after / 1e6:.1f} ms, {100 * node.after / root.after:.1f} % of the samples" if root.after else ""
    return (f'<g class="f" data-x="{x:.3f}" data-w="{width:.3f}" data-d="{depth}" data-l="{escape(label)}">'
            f"<title>{escape(tip)}</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{width:.2f}" height="{ROW - 1}" rx="2" fill="{color}"/>'
            f'<text x="{x + 3:.2f}" y="{y + 12}">{escape(_fit(label, width))}</text></g>')


def _fit(label: str, width: float) -> str:
    room = int((width - 6) / CHAR_PX)
    if room < 3:
        return ""
    return label if len(label) <= room else label[:room - 2] + ".."


def _color(function: str) -> str:
    """Warm colours, the same for a function in every graph (a hash of its name)."""
    h = zlib.crc32(function.encode("utf-8", "replace"))
    return f"rgb({205 + h % 50},{80 + (h >> 8) % 150},{(h >> 16) % 55})"


def _diff_color(node: _Node) -> str:
    """Red where the frame grew, blue where it shrank, paler the smaller the change."""
    largest = max(node.after, node.before)
    change = (node.after - node.before) / largest if largest else 0.0
    pale = int(230 - 190 * min(abs(change), 1.0))
    return f"rgb(255,{pale},{pale})" if change > 0 else f"rgb({pale},{pale},255)" if change < 0 else "rgb(240,240,240)"


_SCRIPT = """
(function () {
  "use strict";
  var frames = Array.prototype.slice.call(document.querySelectorAll(".f"));
  var details = document.getElementById("details"), WIDTH = %(width)d, CHAR = %(char)s;
  function fit(label, w) {
    var room = Math.floor((w - 6) / CHAR);
    return room < 3 ? "" : (label.length <= room ? label : label.slice(0, room - 2) + "..");
  }
  function zoom(x0, w0, d0) {
    frames.forEach(function (g) {
      var x = +g.dataset.x, w = +g.dataset.w, d = +g.dataset.d, rect = g.querySelector("rect"), text = g.querySelector("text");
      var inside = x + w > x0 + 1e-6 && x < x0 + w0 - 1e-6;
      if (!inside || (d < d0 && !(x <= x0 + 1e-6 && x + w >= x0 + w0 - 1e-6))) { g.style.display = "none"; return; }
      var nx = d < d0 ? 0 : (x - x0) / w0 * WIDTH, nw = d < d0 ? WIDTH : w / w0 * WIDTH;
      g.style.display = "";
      rect.setAttribute("x", nx.toFixed(2)); rect.setAttribute("width", nw.toFixed(2));
      text.setAttribute("x", (nx + 3).toFixed(2)); text.textContent = fit(g.dataset.l, nw);
    });
    document.documentElement.setAttribute("data-zoomed", String(w0 < WIDTH - 1e-6));
  }
  frames.forEach(function (g) {
    g.addEventListener("click", function () { zoom(+g.dataset.x, +g.dataset.w, +g.dataset.d); });
    g.addEventListener("mouseover", function () { details.textContent = g.querySelector("title").textContent.split("\\n").join("  "); });
    g.addEventListener("mouseout", function () { details.textContent = " "; });
  });
  document.getElementById("title").addEventListener("click", function () { zoom(0, WIDTH, 0); });
  document.documentElement.setAttribute("data-rendered", String(frames.length));
})();
""" % {"width": WIDTH, "char": CHAR_PX}
