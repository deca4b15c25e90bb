"""The toy city: procedural street scenes written as a tree in the exact Cityscapes layout.

The one loader (``bench.data.cityscapes``) reads toy and real data alike. Splits mirror the paper: ``train`` (labelled pretraining), ``train_extra`` (the unlabelled finetuning set, with
coarse labels like real Cityscapes, never used to train) and ``val`` with the cities Lindau (mini
val) and Frankfurt + Muenster (mini test).

A scene is a street seen from a car: a road running to a vanishing point between sidewalks,
terrain strips and facades (buildings with windows, walls, fences, hedges), a street-end wall,
sky, and objects placed in 3-D and drawn far to near so near ones occlude far ones (cars, trucks,
buses, persons, riders on bicycles or motorcycles, parked bicycles, poles carrying traffic signs
and lights, trees, bins). Appearance: colours that overlap between classes (grey road, grey
buildings, grey cars), 1/f ("natural image") textures whose kind differs by class, cast shadows,
global exposure and contrast like Cityscapes' dark frames, a lens blur and sensor noise. Void
pixels: the ego vehicle's hood (labelId 1), parking bays (9) and street furniture (4).

Every image is drawn from its own generator seeded by (seed, split, index), so the same seed
gives byte-identical files and changing a count never changes the images before it.

Modules: ``canvas`` (style, camera, paint primitives), ``street`` (sky, facades, ground),
``things`` (objects), ``scene`` (one image), ``tree`` (the files). This package only re-exports.
"""

from bench.data.toycity.canvas import SceneStyle, ToyCityError
from bench.data.toycity.scene import render_scene
from bench.data.toycity.tree import CITIES, generate_toycity, image_names

__all__ = [
    "CITIES",
    "SceneStyle",
    "ToyCityError",
    "generate_toycity",
    "image_names",
    "render_scene",
]
