"""fast.ai 2018 lesson 7's CIFAR-10 from scratch: the ladder SimpleNet → ConvNet → ConvNet2 → ConvBnNet → deep BN → Resnet2.

    python experiments/cifar10.py                                  # every rung, the lesson's settings
    python experiments/cifar10.py --rungs convbn resnet2 --out runs/cifar10_bn
    python experiments/cifar10.py --quick                          # 1 epoch of two rungs on 1,024 images

NOT YET RUN: this machine has no copy of CIFAR-10 and no internet. It needs a machine with internet (tfds
downloads ``cifar-10-binary.tar.gz``) or ``JAXLEARN_CIFAR10_DIR`` pointing at a folder holding that file.

Each rung trains from scratch on the 50,000 training images (bs 256, the dataset's own channel statistics, random
flip and reflect-pad-4 random crop) with SGD momentum 0.9 and SGDR (cosine per batch, restarting every
``cycle_len * cycle_mult**k`` epochs), then is scored on the 10,000 test images; Resnet2 also with TTA (the image,
its mirror image and 4 augmented copies). The lesson's schedules were a few plain epochs and then cycles; here each
rung runs its cycles only (the lesson's lr and total epochs). Prints each rung's accuracy beside the lesson's;
writes ``OUT/results.json`` after every rung (OUT: ``runs/cifar10`` unless ``--out``). A loss that turns NaN stops
the run with exit status 2.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import NamedTuple

import jax

from jaxlearn.callbacks import MetricsCB, ParamSchedulerCB, ProgressCB
from jaxlearn.learner import Learner
from jaxlearn.optim import momentum, sgdr
from jaxlearn.vision import tta_accuracy
from jaxlearn.vision.cifar import cifar10_callbacks, cifar10_loaders
from jaxlearn.vision.cifar_models import ConvBnNet, ConvBnNet2, ConvNet, ConvNet2, Resnet2, SimpleNet

import runs


class Rung(NamedTuple):
    """One model of the ladder and the lesson's settings for it."""
    model: type
    lr: float
    epochs: int
    cycle_mult: int
    wd: float
    lesson_accuracy: float


RUNGS = {
    "simple": Rung(SimpleNet, 1e-2, 4, 1, 0.0, 0.47),
    "convnet": Rung(ConvNet, 1e-1, 6, 1, 0.0, 0.60),
    "convnet2": Rung(ConvNet2, 1e-1, 6, 1, 0.0, 0.60),
    "convbn": Rung(ConvBnNet, 1e-1, 6, 1, 0.0, 0.68),
    "deepbn": Rung(ConvBnNet2, 1e-2, 4, 1, 0.0, 0.65),
    "resnet2": Rung(Resnet2, 1e-2, 7, 2, 1e-6, 0.85),  # cycles of 1, 2, 4 epochs; the lesson's 85% is with TTA
}
TTA_RUNGS = ("resnet2",)
TTA_N = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = runs.experiment_parser(
        "cifar10", __doc__.splitlines()[0], epochs=None, bs=256, lr=None, seed=0,
        helps={"epochs": "epochs of every rung (default: each rung's own, the lesson's)",
               "lr": "the SGDR peak learning rate of every rung (default: each rung's own, the lesson's)"},
        quick={"epochs": 1, "n_train": 1024, "rungs": ["simple", "convbn"]})
    parser.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS),
                        help="the models to train, in order")
    parser.add_argument("--n-train", type=runs.positive_int, default=None,
                        help="train on the first N images (quick runs)")
    parser.add_argument("--no-augment", action="store_true", help="no random flip / pad-and-crop")
    return parser.parse_args(argv)


def train_rung(name: str, rung: Rung, dls, args: argparse.Namespace) -> dict:
    """Train one rung from scratch and score it on the test images; its row of the results."""
    lr, epochs = args.lr or rung.lr, args.epochs or rung.epochs
    metrics = MetricsCB()
    schedule = ParamSchedulerCB("learning_rate",
                                lambda n: sgdr(lr, dls.train.n_batches, cycle_len=1, cycle_mult=rung.cycle_mult))
    learn = Learner(rung.model(), dls, optimizer=partial(momentum, beta=0.9, lerp=False, weight_decay=rung.wd),
                    lr=lr, seed=args.seed, callbacks=[metrics, schedule, *cifar10_callbacks(not args.no_augment)])
    n_params = sum(p.size for p in jax.tree.leaves(learn.state.params))
    print(f"[{name}] {rung.model.__name__}: {n_params:,} params, lr {lr:g}, {epochs} epochs", flush=True)
    health = runs.diagnose(learn, args, name)
    t0 = time.perf_counter()
    learn.fit(epochs, callbacks=[] if args.no_progress else [ProgressCB()])
    seconds = time.perf_counter() - t0
    runs.check_history(metrics.history, at=name, hint=runs.lower_lr_hint(lr))
    test = learn.evaluate()
    row = {"model": rung.model.__name__, "params": int(n_params), "test_accuracy": test["accuracy"],
           "test_loss": test["loss"], "lesson_accuracy": rung.lesson_accuracy, "lr": lr, "epochs": epochs,
           "cycle_mult": rung.cycle_mult, "wd": rung.wd, "seconds": seconds, "history": metrics.history,
           **({"health": health} if health else {})}
    if name in TTA_RUNGS:
        row["tta_accuracy"] = tta_accuracy(learn, n=TTA_N)
    tta = f", TTA {row['tta_accuracy']:.4f}" if "tta_accuracy" in row else ""
    print(f"[{name}] test accuracy {row['test_accuracy']:.4f}{tta} (lesson 7: {rung.lesson_accuracy:.2f}) "
          f"in {seconds:.1f} s", flush=True)
    return row


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    runs.prepare_run(args)
    # drop_last: every training batch is full, so BatchNorm's statistics never count the padding's repeated image
    dls = cifar10_loaders(args.bs, seed=args.seed, n_train=args.n_train,
                          drop_last=args.n_train is None or args.n_train > args.bs)
    results = {"batch_size": args.bs, "seed": args.seed, "n_train": len(dls.train), "augment": not args.no_augment,
               "quick": args.quick, "device": str(jax.devices()[0]), "rungs": {}}
    for name in args.rungs:
        results["rungs"][name] = train_rung(name, RUNGS[name], dls, args)
        runs.write_json(args.out / "results.json", results)  # after every rung: a long run keeps what it measured
    return results


if __name__ == "__main__":
    main()
