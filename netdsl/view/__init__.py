"""``netdsl view``: an interactive diagram of a network's block structure, with shapes, costs and source.

:func:`structure` arranges the checked graph's nodes in the hierarchy of their dotted names; :func:`layout`
places boxes and edges for one set of open groups (the page's script is a port of it); :func:`render_html`
writes the self-contained page. ``Network.view_html()`` is the short way::

    html = netdsl.load("networks/resnet50.net").view_html(depth=2)
"""

from __future__ import annotations

from .layout import Box, Edge, Layout, default_expanded, layout
from .page import render_html
from .structure import Group, Structure, structure

__all__ = ["Box", "Edge", "Group", "Layout", "Structure", "default_expanded", "layout", "render_html", "structure"]
