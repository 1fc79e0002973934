"""Procedural pictograms: every object class drawn as a recognisable, varied vector sketch.

SynthScenes and the TinyCLIP caption corpus are both drawn from here, so a class looks the same in
pre-training and in the multi-label world while the *distribution* of scenes differs (one large
object vs. cluttered multi-object scenes). That is the relation between web pre-training and a
downstream dataset that makes zero-shot CLIP useful but imperfect.

A drawer records primitives into a :class:`Sketch` in its own frame (``x`` in ``[0, aspect]``,
``y`` in ``[0, 1]`` pointing down, ground at ``y = 1``, object facing right). The frame is then
mapped onto a pixel box with flip, anisotropic scale and rotation (:meth:`Sketch.place`); the
same placed primitives can be rasterised onto an image and into a mask, which is how scenes
measure occlusion exactly. Drawing is PIL ``ImageDraw`` polygons and lines only (no per-pixel
Python), so a whole 128-px scene renders in about 2 ms of CPU (``python -m trm_lib bench synth``).

The 20 PASCAL VOC classes have hand-made drawers with deliberately confusable pairs (cat/dog,
cow/horse/sheep, car/bus, bicycle/motorbike, chair/sofa). Any other class list works too: a name
without a drawer gets a generic pictogram whose shape, texture and colour are a signature of its
index (:func:`generic_spec`), and :func:`register_drawer` plugs in hand-made ones.
"""

from __future__ import annotations

# the one place that imports every hand-made drawer (each registers its classes on import)
from . import drawers_animals, drawers_household, drawers_people_vehicles  # noqa: F401
from .pictogram_core import (
           ALIASES,
           DRAWERS,
           NAMED_COLORS,
           Color,
           DrawerSpec,
           Placed,
           Rand,
           RandLike,
           Sketch,
           as_rand,
           describe,
           generic_spec,
           get_spec,
           jitter,
           prompt_name,
           register_drawer,
           render_object,
           shade,
           sketch_object,
           with_article,
)

__all__ = ["ALIASES", "DRAWERS", "NAMED_COLORS", "Color", "DrawerSpec", "Placed", "Rand",
           "RandLike", "Sketch", "as_rand", "describe", "generic_spec", "get_spec", "jitter",
           "prompt_name", "register_drawer", "render_object", "shade", "sketch_object",
           "with_article"]
