"""Built-in synthetic detection benchmark, written in COCO format.

Ten classes in five pairs that only shape tells apart (circle/hexagon, ring/square_frame,
triangle_up/triangle_down, plus/cross, square/diamond). Colour is drawn per object independently
of class, sizes span ~8 px to half the image, objects overlap, and the textured background
carries clutter (lines, arcs, blobs, broken polylines) that is not annotated. Every image is
seeded from (seed, split, index), so any number of workers writes identical files.

Boxes are the full extent of each object, also where a later object covers part of it; an object
is skipped if it would hide more than 60% of an earlier one. `area` is the box area.
"""

import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SYNTH_CLASSES = (
    "circle", "hexagon", "ring", "square_frame", "triangle_up", "triangle_down",
    "plus", "cross", "square", "diamond",
)
SPLITS = ("train", "val", "test")
SUPERSAMPLE = 2  # objects drawn at 2x and box-filtered down, for anti-aliased edges
MAX_COVERED = 0.6  # an object may not hide more than this share of an earlier object
LOW_CONTRAST_RATE = 0.2


def synthetic_split_paths(root, split):
    """Return (image_dir, annotation_file) of one split of a generated benchmark."""
    root = Path(root)
    return root / split, root / "annotations" / f"{split}.json"


# ---- shapes: outlines centred on 0, y pointing down; place_outline scales them to a pixel size ----

def regular_polygon(sides, start_deg=-90.0):
    angles = np.deg2rad(start_deg) + np.arange(sides) * 2 * np.pi / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _plus(a):
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1),
                     (-a, a), (-1, a), (-1, -a), (-a, -a)], dtype=np.float64)


def _square():
    return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64)


def _shape(name, rng):
    """Return (list of (outline, fill) polygons, base rotation in degrees) for one class."""
    if name in ("circle", "ring"):
        outer = regular_polygon(40)
    elif name == "hexagon":
        return [(regular_polygon(6), 1)], rng.uniform(0, 60)  # any rotation is still a hexagon
    elif name in ("square_frame", "square"):
        outer = _square()
    elif name in ("triangle_up", "triangle_down"):
        outer = regular_polygon(3, -90 if name == "triangle_up" else 90)
    elif name in ("plus", "cross"):
        return [(_plus(rng.uniform(0.2, 0.35)), 1)], 0 if name == "plus" else 45
    else:  # diamond
        return [(_square(), 1)], 45
    if name in ("ring", "square_frame"):
        return [(outer, 1), (outer * rng.uniform(0.55, 0.75), 0)], 0
    return [(outer, 1)], 0


def place_outline(polygons, rotation_deg, size, aspect, rng, image_size):
    """Rotate, stretch, scale and translate outlines so the object lies inside the image."""
    theta = np.deg2rad(rotation_deg)
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    stretch = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)])
    moved = [(outline @ rotate.T * stretch, fill) for outline, fill in polygons]
    outer = moved[0][0]
    extent = outer.max(axis=0) - outer.min(axis=0)
    scale = size / extent.max()
    low = -outer.min(axis=0) * scale
    high = image_size - outer.max(axis=0) * scale
    offset = rng.uniform(low, np.maximum(high, low))
    return [(outline * scale + offset, fill) for outline, fill in moved]


def rasterize(polygons, image_size, *, lines=()):
    """Draw filled polygons and (points, width) polylines.

    Returns:
        (alpha float32 [h,w] in [0,1], window): alpha covers only canvas[window], the
        shape's bounding rectangle, so drawing and blending cost scales with the shape.
    """
    points = np.concatenate([o for o, _ in polygons] + [p for p, _ in lines])
    margin = 2 + max((width for _, width in lines), default=0)
    # At least one pixel, inside the image, even for clutter that falls off the edge.
    low = np.clip(np.floor(points.min(axis=0) - margin), 0, image_size - 1).astype(int)
    high = np.clip(np.ceil(points.max(axis=0) + margin), low + 1, image_size).astype(int)
    mask = Image.new("L", tuple((high - low) * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    for outline, fill in polygons:
        draw.polygon([tuple(p) for p in (outline - low) * SUPERSAMPLE], fill=255 * fill)
    for line, width in lines:
        draw.line([tuple(p) for p in (line - low) * SUPERSAMPLE], fill=255,
                  width=max(1, round(width * SUPERSAMPLE)), joint="curve")
    small = mask.resize(tuple(high - low), Image.BOX)
    alpha = np.asarray(small, dtype=np.float32) / 255.0
    return alpha, np.s_[low[1]:high[1], low[0]:high[0]]


def blend(canvas, sprite, color, *, opacity=1.0):
    alpha, window = sprite
    patch = canvas[window]
    patch += (opacity * alpha)[..., None] * (np.asarray(color, dtype=np.float32) - patch)


# ---- background and clutter ----

def draw_background(rng, size):
    """Smooth colour noise over a random two-colour gradient, sometimes with faint stripes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.uniform(0.1, 0.9, size=(2, 3)).astype(np.float32)
    canvas = start + ramp[..., None] * (end - start)
    cells = int(rng.integers(3, 9))
    noise = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(noise).resize((size, size), Image.BICUBIC), np.float32)
    canvas += (smooth / 255.0 - 0.5) * rng.uniform(0.15, 0.5)
    if rng.random() < 0.6:
        period = rng.uniform(4, 24)
        phi = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * size * (np.cos(phi) * xx + np.sin(phi) * yy) / period)
        canvas += wave[..., None] * rng.uniform(0.02, 0.1) * rng.uniform(-1, 1, 3)
    return canvas


def draw_clutter(rng, size, *, thin_only=False):
    """One distractor that belongs to no class: segment, arc, blob, ellipse or polyline."""
    # Thin kinds only over objects, so clutter never hides an annotated object.
    kind = rng.choice([0, 1, 4]) if thin_only else rng.integers(5)
    extent = math.exp(rng.uniform(math.log(6), math.log(size / 2)))
    center = rng.uniform(0, size, 2)
    width = rng.uniform(1, 3)
    if kind == 0:  # straight segment
        end = center + extent * rng.uniform(-1, 1, 2)
        return rasterize([], size, lines=[(np.stack([center, end]), width)])
    if kind == 1:  # arc well short of a full ring
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.linspace(0, rng.uniform(0.7, 3.5), 16)
        points = center + extent / 2 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return rasterize([], size, lines=[(points, width)])
    if kind == 2:  # lumpy concave blob: alternating deep and shallow radii, so it never
        count = 2 * int(rng.integers(5, 9))  # passes for a convex polygon or a 4-arm plus;
        extent = max(extent, 14.0)  # below ~14 px its lobes blur into a plus or a circle
        angles = (np.arange(count) + rng.uniform(-0.25, 0.25, count)) * 2 * np.pi / count
        radii = extent / 2 * np.where(np.arange(count) % 2, rng.uniform(0.8, 1.0, count),
                                      rng.uniform(0.45, 0.7, count))
        outline = center + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return rasterize([(outline, 1)], size)
    if kind == 3:  # elongated ellipse, never round enough to pass for a circle
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ellipse = np.stack([np.cos(angles), np.sin(angles) / rng.uniform(2.5, 5)], axis=1)
        outline = place_outline([(ellipse, 1)], rng.uniform(0, 180), extent, 1.0, rng, size)
        return rasterize(outline, size)
    points = center + np.cumsum(extent / 2 * rng.uniform(-1, 1, (int(rng.integers(3, 5)), 2)),
                                axis=0)  # broken polyline, like part of an outline
    return rasterize([], size, lines=[(points, width)])


# ---- objects ----

def object_color(rng, canvas, sprite):
    """A random colour; sometimes one close to the background under the object."""
    if rng.random() >= LOW_CONTRAST_RATE:
        return rng.uniform(0, 1, 3)
    alpha, window = sprite
    weights = alpha / max(float(alpha.sum()), 1e-6)
    local = (canvas[window] * weights[..., None]).sum(axis=(0, 1))
    direction = rng.normal(size=3)
    return np.clip(local + direction / np.linalg.norm(direction) * rng.uniform(0.12, 0.2), 0, 1)


@dataclasses.dataclass(frozen=True)
class SceneStyle:
    """How busy a scene is; the defaults are the benchmark's. Counts are drawn from [low, high).

    objects: objects wanted per image. min_extent (px), max_extent (fraction of the image side): the
    range of an object's longest side, drawn log-uniformly. clutter: distractors under the objects;
    thin_clutter: thin ones over them.
    """

    objects: tuple[int, int] = (2, 9)
    min_extent: float = 8.0
    max_extent: float = 0.5
    clutter: tuple[int, int] = (3, 11)
    thin_clutter: tuple[int, int] = (0, 3)


def _try_object(rng, size, owner, visible, areas, shapes, style):
    """Draw a random object, unless it would hide too much of an earlier one.

    shapes: the class names and, for each, rng -> (list of (outline, fill), base rotation in degrees).
    style: the scene's SceneStyle, for the object's size.

    Returns:
        None, or (label 0..K-1, xyxy box, sprite, covered: its pixels in the sprite's window,
        hidden: pixels it takes from each earlier object).
    """
    label = int(rng.integers(len(shapes)))
    polygons, rotation = list(shapes.values())[label](rng)
    extent = math.exp(rng.uniform(math.log(style.min_extent), math.log(size * style.max_extent)))
    aspect = math.exp(rng.uniform(-0.25, 0.25))
    placed = place_outline(polygons, rotation + rng.uniform(-12, 12), extent, aspect, rng, size)
    sprite = rasterize(placed, size)
    covered = sprite[0] >= 0.5
    if covered.sum() < 6:
        return None
    below = owner[sprite[1]]
    hidden = np.bincount(below[covered & (below >= 0)], minlength=len(areas))
    if len(areas) and np.any(visible - hidden < (1 - MAX_COVERED) * np.asarray(areas)):
        return None
    outer = placed[0][0]
    box = np.concatenate([outer.min(axis=0), outer.max(axis=0)]).clip(0, size)
    return label, box, sprite, covered, hidden


SYNTH_SHAPES = {name: functools.partial(_shape, name) for name in SYNTH_CLASSES}


def render_scene(rng, image_size, shapes, style=SceneStyle()):
    """A textured, cluttered image with objects of the given shapes (see _try_object and SceneStyle).

    Returns (uint8 [S,S,3], list of (label 1..K, xyxy box)).
    """
    canvas = draw_background(rng, image_size)
    for _ in range(int(rng.integers(*style.clutter))):
        blend(canvas, draw_clutter(rng, image_size), rng.uniform(0, 1, 3))
    # owner: which object shows at each pixel; visible/areas: its shown and full pixel counts.
    owner = np.full((image_size, image_size), -1, dtype=np.int64)
    visible, areas, objects = np.zeros(0, dtype=np.int64), [], []
    wanted = int(rng.integers(*style.objects))
    for _ in range(3 * wanted):
        if len(objects) == wanted:
            break
        drawn = _try_object(rng, image_size, owner, visible, areas, shapes, style)
        if drawn is None:
            continue
        label, box, sprite, covered, hidden = drawn
        blend(canvas, sprite, object_color(rng, canvas, sprite))
        owner[sprite[1]][covered] = len(objects)
        visible = np.append(visible - hidden, int(covered.sum()))
        areas.append(int(covered.sum()))
        objects.append((label + 1, box))
    for _ in range(int(rng.integers(*style.thin_clutter))):
        blend(canvas, draw_clutter(rng, image_size, thin_only=True), rng.uniform(0, 1, 3),
              opacity=0.8)
    canvas += rng.normal(0, rng.uniform(0.01, 0.04), canvas.shape).astype(np.float32)
    pixels = (canvas.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    return pixels, objects


def render_image(seed, split, index, *, image_size=128):
    """Render one image; returns (uint8 [S,S,3], list of (label 1..K, xyxy box))."""
    return render_scene(np.random.default_rng([seed, SPLITS.index(split), index]), image_size, SYNTH_SHAPES)


# ---- writing the COCO files ----

def _write_image(job):
    """Render and save one image (a worker task); returns its COCO image and boxes."""
    render, seed, split, index, image_size, image_dir = job
    pixels, objects = render(seed, split, index, image_size=image_size)
    file_name = f"{index:06d}.png"
    Image.fromarray(pixels).save(Path(image_dir) / file_name, format="PNG")
    image = {"id": index + 1, "file_name": file_name, "width": image_size,
             "height": image_size}
    return image, objects


def _coco_annotations(results):
    """Turn per-image (image, objects) results into COCO image and annotation lists."""
    images, annotations = [], []
    for image, objects in results:
        images.append(image)
        for label, box in objects:
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            # area is the box area: there are no masks, and it sorts objects into COCO's
            # small/medium/large by their extent rather than by their (hollow) pixel count.
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                                "category_id": label, "bbox": [x1, y1, w, h],
                                "area": round(w * h, 2), "iscrowd": 0})
    return images, annotations


def write_coco_split(out_dir, split, count, *, render, classes, description, seed, image_size, pool,
                     supercategory="shape"):
    """Render `count` images of one split with `render` and write them with their COCO JSON.

    render: a module-level function (seed, split, index, *, image_size) -> (uint8 [S,S,3],
        list of (label 1..K, xyxy box)); module-level so worker processes can receive it.
    """
    image_dir, annotation_file = synthetic_split_paths(out_dir, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(render, seed, split, index, image_size, str(image_dir)) for index in range(count)]
    results = (pool.imap(_write_image, jobs, chunksize=16) if pool is not None
               else map(_write_image, jobs))
    images, annotations = _coco_annotations(results)
    categories = [{"id": i + 1, "name": name, "supercategory": supercategory} for i, name in enumerate(classes)]
    coco = {"info": {"description": description, "seed": seed},
            "images": images, "annotations": annotations, "categories": categories}
    annotation_file.write_text(json.dumps(coco))
    return {"images": len(images), "objects": len(annotations)}


def write_coco_dataset(out_dir, *, render, classes, description, seed, counts, image_size, workers,
                       supercategory="shape"):
    """Every split of a generated dataset; returns its summary (root, seed, classes, split sizes)."""
    summary = {"root": str(out_dir), "seed": seed, "image_size": image_size,
               "classes": list(classes), "splits": {}}
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    with pool if pool is not None else contextlib.nullcontext():
        for split, count in counts.items():
            summary["splits"][split] = write_coco_split(
                out_dir, split, count, render=render, classes=classes, description=description,
                seed=seed, image_size=image_size, pool=pool, supercategory=supercategory)
    return summary


def generate_synthetic(out_dir, *, seed=0, num_train=4000, num_val=500, num_test=500,
                       image_size=128, workers=2) -> dict:
    """Write the benchmark as PNGs plus COCO JSON under out_dir.

    Returns:
        dict(root, seed, image_size, classes, splits={split: {images, objects}}).
    """
    return write_coco_dataset(out_dir, render=render_image, classes=SYNTH_CLASSES,
                              description="tardistill synthetic shapes", seed=seed,
                              counts=dict(zip(SPLITS, (num_train, num_val, num_test))),
                              image_size=image_size, workers=workers)
