"""Command line: parse arguments, call the library, print results. No logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from tardistill.errors import TardistillError, Terminated


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="flat YAML experiment file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.iterations=100 (repeatable)")


def _add_model_source_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path,
                        help="a tardistill checkpoint, or a torchvision weights file (.pth, .safetensors) of the "
                        "config's model.architecture, whose classes are distill.teacher_classes (default: the "
                        "data's)")
    source.add_argument("--teacher", action="store_true",
                        help="the config's distill.teacher, loaded as distill loads it (docs/PRETRAINED.md)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tardistill", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    for name, help_text, sizes in (
            ("synth", "write the built-in synthetic benchmark (COCO format)", (4000, 500, 500)),
            ("digits", "write the second built-in set: handwritten digits (scikit-learn's bundled scans) on "
                       "textured canvases", (2000, 150, 300)),
            ("shapes", "write the pretraining set: eight shapes no benchmark uses (train a detector on it and "
                       "load its backbone with model.backbone_weights)", (2000, 150, 150))):
        sub = data.add_parser(name, help=help_text)
        sub.add_argument("--out", required=True, type=Path)
        sub.add_argument("--seed", type=int, default=0)
        for option, default in zip(("--num-train", "--num-val", "--num-test"), sizes):
            sub.add_argument(option, type=int, default=default)
        sub.add_argument("--image-size", type=int, default=128)

    for name, help_text in (("train", "train a detector"), ("distill", "distill a teacher into a student")):
        sub = commands.add_parser(name, help=help_text)
        _add_config_args(sub)
        sub.add_argument("--out", type=Path, help="output directory (default runs/<config name>)")
        sub.add_argument("--resume", action="store_true", help="continue from OUT/last_state.safetensors")
        sub.add_argument("--overwrite", action="store_true",
                         help="move a run already in OUT aside (to OUT.replaced-<time>) and start anew")

    ev = commands.add_parser("eval", help="evaluate a checkpoint, a torchvision weights file or the config's "
                             "teacher on a split")
    _add_config_args(ev)
    _add_model_source_args(ev)
    ev.add_argument("--split", default="test")
    ev.add_argument("--json", action="store_true", help="print a flat JSON object instead of a table")

    det = commands.add_parser("evaluate-detections", help="score a COCO results file against ground truth")
    det.add_argument("gt", type=Path, help="COCO JSON file, or a VOC root (JPEGImages/, Annotations/, ...)")
    det.add_argument("detections", type=Path, help="COCO results JSON: [{image_id, category_id, bbox, score}]")
    det.add_argument("--metric", choices=("coco", "voc07", "voc"), default=None,
                     help="default: coco for a JSON file, voc for a VOC root")
    det.add_argument("--split", default="test", help="VOC image set (ImageSets/Main/<split>.txt)")
    det.add_argument("--json", action="store_true")

    pred = commands.add_parser("predict", help="draw the detections of a checkpoint, a torchvision weights file "
                               "or the config's teacher on images")
    _add_config_args(pred)
    _add_model_source_args(pred)
    pred.add_argument("--images", required=True, type=Path)
    pred.add_argument("--out", required=True, type=Path)
    pred.add_argument("--score-threshold", type=float, default=0.5)

    prof = commands.add_parser("profile", help="parameters, GFLOPs, CPU latency and peak memory, side by side")
    prof.add_argument("sources", nargs="+", type=Path, metavar="CONFIG_OR_CHECKPOINT",
                      help="a checkpoint, or a YAML config: its distill.teacher and its untrained student")
    prof.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a key of every config given (repeatable)")
    prof.add_argument("--repeats", type=int, default=10, help="timed calls at batch 1 (half as many at 8)")
    prof.add_argument("--json", action="store_true")

    cmp = commands.add_parser("compare", help="runs side by side: test and validation AP and AP50, parameters, "
                              "CPU latency; and a PNG of validation AP against iteration")
    cmp.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="folders written by train or distill")
    cmp.add_argument("--plot", type=Path, default=Path("compare_val_ap.png"), help="where the PNG goes "
                     "(default: compare_val_ap.png)")
    cmp.add_argument("--repeats", type=int, default=10, help="timed CPU calls per run for the latency; 0 skips it")
    cmp.add_argument("--markdown", action="store_true", help="a markdown table, e.g. for docs/RESULTS.md")
    cmp.add_argument("--json", action="store_true")

    exp = commands.add_parser("export", help="write a checkpoint's detector as ONNX or TorchScript, "
                              "and check it against PyTorch")
    exp.add_argument("--checkpoint", required=True, type=Path)
    exp.add_argument("--format", dest="export_format", default="onnx", help="onnx (default) or torchscript")
    exp.add_argument("--out", required=True, type=Path)
    exp.add_argument("--image-size", type=int, help="side of the square input (default: the config's model.max_size)")
    exp.add_argument("--check-images", type=Path, help="folder of images for the parity check (default: random "
                     "images, which only show that the graph runs)")
    exp.add_argument("--max-check-images", type=int, default=8)
    exp.add_argument("--check-score-threshold", type=float,
                     help="compare detections at or above this score (default: the model's score_threshold)")
    exp.add_argument("--json", action="store_true")

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    cost = bench.add_parser("distill-cost", help="distillation step time and peak memory against the student's")
    _add_config_args(cost)
    cost.add_argument("--repeats", type=int, default=5)
    repro = bench.add_parser("reproduce", help="the paper's ablation and the method comparison, resumable; "
                             "writes docs/RESULTS.md's benchmark section and docs/results.json")
    repro.add_argument("--preset", choices=("cpu", "cpu_fp32", "gpu"), default="cpu",
                       help="cpu_fp32: the cpu preset in fp32, for a CPU without native bf16 (no AVX-512)")
    repro.add_argument("--seeds", type=int, default=3, help="seeds of the seeded run groups (default 3)")
    repro.add_argument("--seed-group", action="append", metavar="GROUP",
                       help="also run this group's rows for every seed (repeatable): main, baselines, "
                            "components, retinanet")
    repro.add_argument("--out", type=Path, help="working folder (default runs/reproduce_<preset>)")
    repro.add_argument("--jobs", type=int, help="runs side by side (default: the preset's)")
    repro.add_argument("--only", action="append", metavar="TEXT",
                       help="run only runs whose key contains TEXT (repeatable)")
    repro.add_argument("--report-only", action="store_true", help="write the report from finished runs")
    repro.add_argument("--docs", type=Path, default=Path("docs"), help="where RESULTS.md and results.json are")

    demo = commands.add_parser("demo", help="the whole story on the built-in dataset")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--fast", action="store_true", help="a tiny run for smoke tests")
    return parser


def _print_metrics(metrics: dict[str, float], *, as_json: bool, title: str | None = None) -> None:
    from tardistill.metrics import format_metrics_table

    if as_json:
        print(json.dumps(metrics))
    else:
        print(format_metrics_table(metrics, title=title))


def _default_out(config_path: str, command: str) -> Path:
    return Path("runs") / f"{Path(config_path).stem}-{command}"


def _export(args: argparse.Namespace) -> int:
    """`tardistill export`; exit code 1 when the export's outputs differ from PyTorch's."""
    from tardistill import commands
    from tardistill.deploy.parity import format_parity

    result = commands.export(args.checkpoint, args.out, export_format=args.export_format,
                             image_size=args.image_size, check_images=args.check_images,
                             max_check_images=args.max_check_images, score_threshold=args.check_score_threshold)
    if args.json:
        print(json.dumps(result))
    else:
        size = result["image_size"]
        shape = f"[3, {size}, {size}]" if result["format"] == "onnx" else "[3, H, W]"
        print(f"wrote {result['out']} ({result['format']}; input: float32 {shape}, RGB in 0..1; "
              "outputs: boxes [N, 4] xyxy px, scores [N], labels [N])")
        print(format_parity(result["parity"], against=f"with PyTorch ({result['check_images']})"))
    return 0 if result["parity"]["passed"] else 1


def _run(args: argparse.Namespace) -> int:
    from tardistill import commands

    if args.command == "data":
        summary = commands.make_dataset(args.data_command, args.out, seed=args.seed, num_train=args.num_train,
                                          num_val=args.num_val, num_test=args.num_test, image_size=args.image_size)
        print(json.dumps(summary))
    elif args.command in ("train", "distill"):
        from tardistill.engine.distributed import distributed_session, is_main

        out = args.out or _default_out(args.config, args.command)
        run = commands.train if args.command == "train" else commands.distill
        with distributed_session():  # under torchrun: one rank of a data-parallel run (docs/DISTRIBUTED.md)
            result = run(args.config, args.overrides, out, resume=args.resume, overwrite=args.overwrite)
            if is_main():
                _print_metrics(result["test_metrics"], as_json=False, title=f"test metrics ({out})")
                print(f"outputs: {out}")
    elif args.command == "eval":
        metrics = commands.evaluate(args.config, args.overrides, args.checkpoint, split=args.split,
                                    teacher=args.teacher)
        name = args.checkpoint or f"teacher of {args.config}"
        _print_metrics(metrics, as_json=args.json, title=f"{name} on {args.split}")
    elif args.command == "evaluate-detections":
        metrics = commands.evaluate_detections(args.gt, args.detections, metric=args.metric, split=args.split)
        _print_metrics(metrics, as_json=args.json, title=str(args.detections))
    elif args.command == "predict":
        written = commands.predict(args.config, args.overrides, args.checkpoint, args.images, args.out,
                                   score_threshold=args.score_threshold, teacher=args.teacher)
        print(f"wrote {written} images to {args.out}")
    elif args.command == "profile":
        rows = commands.profile(args.sources, args.overrides, repeats=args.repeats)
        print(json.dumps(rows, indent=2) if args.json else commands.format_profile(rows))
    elif args.command == "export":
        return _export(args)
    elif args.command == "compare":
        from tardistill.compare import compare_runs, format_comparison

        rows = compare_runs(args.runs, plot=args.plot, latency_repeats=args.repeats)
        print(json.dumps(rows, indent=2) if args.json else format_comparison(rows, markdown=args.markdown))
        print(f"plot: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    elif args.command == "bench" and args.bench_command == "reproduce":
        out = args.out or Path("runs") / f"reproduce_{args.preset}"
        summary = commands.reproduce(args.preset, out, seeds=args.seeds, jobs=args.jobs, only=args.only,
                                     report_only=args.report_only, docs=args.docs, seed_groups=args.seed_group)
        print(summary)
    elif args.command == "bench":
        print(json.dumps(commands.distill_cost(args.config, args.overrides, repeats=args.repeats), indent=2))
    elif args.command == "demo":
        commands.demo(args.out, fast=args.fast)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tardistill` console script."""
    args = _parser().parse_args(argv)
    from tardistill.engine.distributed import env_rank  # after parsing: --help need not import torch

    # Under torchrun rank 0 speaks for the run; the other ranks report only warnings and errors.
    rank = env_rank()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s" if rank == 0
                        else f"%(levelname)s [rank {rank}] %(name)s: %(message)s")
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(args)
    except TardistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno is None:  # not a system call's failure: a bug, whose traceback helps
            raise
        # A file-system problem the code did not foresee (a full disk while writing a log, ...).
        print(f"error: {f'{err.filename}: ' if err.filename else ''}{err.strerror}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def _raise_terminated(signum, frame) -> None:
    """SIGTERM stops a run as Ctrl-C does: training saves its state on the way out (engine/trainer.py)."""
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
