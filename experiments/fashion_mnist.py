"""The main job: lesson 17's BatchNorm CNN on Fashion-MNIST, 3 epochs of SGD momentum with one-cycle.

Everything is jaxlearn's own: BatchNorm from scratch, leaky Kaiming init, GeneralRelu, momentum as an
optax transform, fastai's one-cycle schedule.

    python experiments/fashion_mnist.py --epochs 3 --bs 256 --lr 0.2 --out runs/fashion_mnist
    python experiments/fashion_mnist.py --quick          # < 1 min: 1 epoch on the first 1,024 images

Prints the epoch table and the test accuracy beside the lesson's number; writes ``OUT/results.json`` and
``OUT/loss.png`` (OUT: ``runs/fashion_mnist`` unless ``--out``). A loss that turns NaN stops the run with exit
status 2 and no results.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from jaxlearn.callbacks import BatchTransformCB, MetricsCB, ParamSchedulerCB, ProgressCB
from jaxlearn.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, fashion_mnist_loaders, normalize
from jaxlearn.learner import Learner
from jaxlearn.nn import BatchNorm, GeneralRelu, kaiming_normal
from jaxlearn.optim import momentum, one_cycle
from jaxlearn.vision import get_model

import runs

LESSON_ACCURACY = 0.899  # lesson 17: BatchNorm, bs 256, 3 epochs at lr 0.2 then one more at a lower lr

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = runs.experiment_parser("fashion_mnist", __doc__.splitlines()[0], epochs=3, bs=256, lr=0.2, seed=0,
                                    quick={"epochs": 1, "n_train": 1024})
    parser.add_argument("--n-train", type=runs.positive_int, default=None,
                        help="train on the first N images (quick runs)")
    return parser.parse_args(argv)


@runs.exit_on_run_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    runs.prepare_run(args)
    dls = fashion_mnist_loaders(args.bs, seed=args.seed, n_train=args.n_train)
    act = partial(GeneralRelu, leak=0.1, sub=0.4)
    model = get_model(act, norm=BatchNorm, kernel_init=kaiming_normal(a=0.1))
    metrics = MetricsCB()
    # Heavy-ball momentum 0.9 (= torch/optax SGD momentum), lr on fastai's one-cycle over the whole fit.
    learn = Learner(model, dls, optimizer=partial(momentum, beta=0.9, lerp=False), lr=args.lr, seed=args.seed,
                    callbacks=[metrics, BatchTransformCB(normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)),
                               ParamSchedulerCB("learning_rate", lambda n: one_cycle(args.lr, n))])
    health = runs.diagnose(learn, args)
    t0 = time.perf_counter()
    learn.fit(args.epochs, callbacks=[ProgressCB(plot_path=args.out / "loss.png")])
    seconds = time.perf_counter() - t0
    runs.check_history(metrics.history, hint=runs.lower_lr_hint(args.lr))
    test = learn.evaluate()
    print(f"test accuracy {test['accuracy']:.4f} after {args.epochs} epochs "
          f"(lesson 17: {LESSON_ACCURACY:.3f} after 3+1 epochs) in {seconds:.1f} s")
    results = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "lesson_accuracy": LESSON_ACCURACY,
               "epochs": args.epochs, "batch_size": args.bs, "lr": args.lr, "seed": args.seed,
               "n_train": len(dls.train), "quick": args.quick, "seconds": seconds, "history": metrics.history,
               **({"health": health} if health else {})}
    runs.write_json(args.out / "results.json", results)
    return results


if __name__ == "__main__":
    main()
