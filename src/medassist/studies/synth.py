"""The synthetic-data study: class-conditional generators (VAE, GAN, diffusion; a DP-SGD VAE) trained by the one
engine, measured on the same held-out real images for fidelity, diversity, usefulness and privacy, and a report.

The domain classifier (features for the Fréchet distance, precision/recall, conditional accuracy) is the TRTR
classifier: a registered model trained on the real training split. Every choice (best epoch, which generator
augments) is made on validation; the test split is only evaluated. Patient records:
:mod:`medassist.studies.synth_records`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medassist.config import to_dict
from medassist.data.types import ImageData, Split
from medassist.errors import MedAssistError
from medassist.evaluate.metrics import accuracy, auc, headline_metrics_with_ci, paired_bootstrap_difference
from medassist.run import Run
from medassist.studies.synth_config import GENERATORS, SynthStudyConfig
from medassist.studies.units import train_unit
from medassist.synth import fidelity, plots, privacy
from medassist.synth.common import PROVENANCE, SYNTHETIC_SUFFIX, check_classes, check_image_size, to_uint8
from medassist.synth.train import train_generator
from medassist.train.data import ImageBatcher, model_device, predict_proba, to_tensor
from medassist.train.device import on_device
from medassist.train.engine import Labelled, with_min_steps
from medassist.utils.io import atomic_path, atomic_write_text
from medassist.utils.steps import step

__all__ = ["SynthStudyConfig", "run_synth_study"]


def _load(cfg: SynthStudyConfig) -> ImageData:
    from medassist.studies.image import load_data
    from medassist.studies.image_config import ImageStudyConfig

    icfg = ImageStudyConfig(
        dataset=cfg.dataset,
        images=cfg.images,
        path_column=cfg.path_column,
        label_column=cfg.label_column,
        image_size=cfg.image_size,
        data_dir=cfg.data_dir,
        download=cfg.download,
        subsample=cfg.subsample,
        progress=cfg.progress,
    )
    icfg.train.seed = cfg.seed
    return load_data(icfg)


def _check(cfg: SynthStudyConfig, data: ImageData) -> None:
    """Everything that can be refused before a run folder is made."""
    unknown = sorted(set(cfg.generators) - set(GENERATORS))
    if unknown:
        raise MedAssistError(f"unknown generator '{unknown[0]}'; choose from {', '.join(GENERATORS)}")
    check_image_size(data.image_size)
    check_classes(data.splits["train"].labels, data.num_classes, name=data.name)
    if cfg.dp.epsilons:
        from medassist.synth.dp import check_reachable

        n = len(data.splits["train"])
        tcfg = with_min_steps(cfg.dp.train, -(-n // cfg.dp.train.batch_size))
        for eps in cfg.dp.epsilons:
            check_reachable(eps, 1.0 / n, n_samples=n, batch_size=tcfg.batch_size, epochs=tcfg.epochs)


def _seeded(cfg: Any, seed: int) -> Any:
    return dataclasses.replace(cfg, seed=seed)


def _sample(model: Any, labels: torch.Tensor, seed: int, **kw: Any) -> tuple[np.ndarray, float]:
    """uint8 samples of ``model`` for ``labels`` and the seconds it took."""
    t0 = time.perf_counter()
    x = model.generate(labels, torch.Generator().manual_seed(seed), **kw)
    return to_uint8(x), time.perf_counter() - t0


def _class_labels(train_labels: np.ndarray, n: int, num_classes: int) -> torch.Tensor:
    from medassist.synth.common import balanced_labels

    return balanced_labels(n, num_classes, proportions=np.bincount(train_labels, minlength=num_classes))


def _test_metrics(model: torch.nn.Module, test: Split, cfg: SynthStudyConfig) -> tuple[np.ndarray, dict]:
    probs = predict_proba(model, test.images)
    return probs, headline_metrics_with_ci(test.labels.reshape(-1), probs, n_boot=cfg.n_boot, seed=cfg.seed)


def _ci(h: dict) -> list[float]:
    return [h["value"], h["ci_low"], h["ci_high"]]


def _label(name: str, rec: dict[str, Any]) -> str:
    """A generator's name in a figure, marked when its time budget cut its training while validation still
    improved (``under_trained`` in its record; an older record without it reads as complete)."""
    return f"{name} (under-trained)" if rec.get("under_trained") else name


class _Study:
    """The state one image run shares between its steps."""

    def __init__(self, cfg: SynthStudyConfig, data: ImageData, run: Run) -> None:
        self.cfg, self.data, self.run = cfg, data, run
        self.train, self.val, self.test = (data.splits[s] for s in ("train", "val", "test"))
        self.y_train = self.train.labels.reshape(-1)
        self.y_test = self.test.labels.reshape(-1)
        self.k = data.num_classes
        self.rng = np.random.default_rng(cfg.seed)
        n_eval = min(cfg.eval_samples, len(self.train))
        self.eval_idx = np.sort(self.rng.choice(len(self.train), n_eval, replace=False))
        # The privacy hold-out is the validation split: never trained on, and drawn from the training split's
        # distribution (MedMNIST carves it out of the source's training set), so that a membership attack measures
        # memorised images, not the shift to the test split (PneumoniaMNIST: validation accuracy 0.97, test 0.85).
        # Attack members: training images drawn with the hold-out's class counts, so that a class imbalance between
        # the splits does not pass for leakage either.
        self.y_val = self.val.labels.reshape(-1)
        parts = []
        for c, n_c in enumerate(np.bincount(self.y_val, minlength=self.k)):
            pool = np.flatnonzero(self.y_train == c)
            parts.append(self.rng.choice(pool, min(int(n_c), len(pool)), replace=False))
        self.member_idx = np.sort(np.concatenate(parts))
        self.x_train = to_tensor(self.train.images)
        self.x_val, self.x_test = to_tensor(self.val.images), to_tensor(self.test.images)
        self.t_ytrain = torch.from_numpy(self.y_train.astype(np.int64))
        self.t_yval = torch.from_numpy(self.y_val.astype(np.int64))
        self.t_ytest = torch.from_numpy(self.y_test.astype(np.int64))
        self.metrics: dict[str, Any] = {"generators": {}, "dp": {}, "privacy_holdout": "val"}

    # --- the real-data classifier: TRTR and the domain classifier ----------------------------------------------
    def classifier(self, name: str, train: Split) -> tuple[Any, torch.nn.Module]:
        return train_unit(
            self.run,
            name,
            model_name=self.cfg.classifier,
            model_kwargs={"width": self.cfg.classifier_width} if self.cfg.classifier == "cnn_gap" else {},
            train=train,
            val=self.val,
            cfg=_seeded(self.cfg.classifier_train, self.cfg.seed),
            num_classes=self.k,
            in_channels=self.data.n_channels,
            progress=self.cfg.progress,
        )

    def real(self) -> None:
        unit, self.clf = self.classifier("trtr", self.train)
        self.p_trtr, h = _test_metrics(self.clf, self.test, self.cfg)
        self.f_train = fidelity.classifier_features(self.clf, self.x_train)
        self.f_val = fidelity.classifier_features(self.clf, self.x_val)
        self.f_test = fidelity.classifier_features(self.clf, self.x_test)
        f_eval = self.f_train[self.eval_idx]
        floor = {
            "frechet_distance": fidelity.frechet_distance(f_eval, self.f_test),
            **fidelity.prdc(self.f_test, f_eval),
            "conditional_accuracy": h["accuracy"]["value"],
            "per_class": self._per_class(f_eval, self.y_train[self.eval_idx]),
        }
        dup, thr = fidelity.near_duplicate_rate(self.x_train[self.eval_idx], self.x_test)
        floor.update(near_duplicate_rate=dup, near_duplicate_threshold=thr)
        self.metrics["trtr"] = {"unit": unit.row(), "test": h}
        self.metrics["real_floor"] = floor

    def _per_class(self, feats: torch.Tensor, labels: np.ndarray) -> dict[str, dict[str, float]]:
        out = {}
        for c, name in enumerate(self.data.class_names):
            a, b = feats[labels == c], self.f_test[self.y_test == c]
            if len(a) > 6 and len(b) > 6:
                out[name] = {"frechet_distance": fidelity.frechet_distance(a, b), **fidelity.prdc(b, a)}
        return out

    # --- generators ----------------------------------------------------------------------------------------------
    def build(self, name: str) -> tuple[Any, dict[str, Any]]:
        """Train (or reload) one generator; returns it and its training record."""
        cfg, k, c, s = self.cfg, self.k, self.data.n_channels, self.data.image_size
        tr = Labelled(ImageBatcher(self.x_train), self.y_train)
        if name == "vae" or name.startswith("vae_dp"):
            from medassist.synth.vae import ConditionalVAE, VAEStep, vae_validation

            v = cfg.vae
            dp_eps = float(name.split("eps")[1]) if name.startswith("vae_dp") else None
            tcfg = _seeded(cfg.dp.train if dp_eps is not None else v.train, cfg.seed)
            total = with_min_steps(tcfg, -(-len(self.train) // tcfg.batch_size)).epochs * -(
                -len(self.train) // tcfg.batch_size
            )
            step = VAEStep(
                schedule=v.kl_schedule,
                warmup_steps=int(v.warmup_fraction * total),
                cycles=v.cycles,
                total_steps=total,
                free_bits=0.0 if dp_eps is not None else v.free_bits,
            )
            hook = None
            if dp_eps is not None:
                from medassist.synth.dp import OpacusPrivacy

                hook = OpacusPrivacy(
                    target_epsilon=dp_eps, delta=1.0 / len(self.train), max_grad_norm=cfg.dp.max_grad_norm
                )
            return train_generator(
                self.run,
                name,
                lambda: ConditionalVAE(
                    in_channels=c,
                    num_classes=k,
                    image_size=s,
                    latent_dim=v.latent_dim,
                    width=cfg.dp.width if dp_eps is not None else v.width,
                ),
                tr,
                tcfg,
                step_fn=step,
                validate=vae_validation(self.x_val, self.t_yval),
                num_classes=k,
                privacy=hook,
                progress=cfg.progress,
            )
        if name == "gan":
            from medassist.synth.gan import Discriminator, GANStep, Generator

            g = cfg.gan
            torch.manual_seed(cfg.seed + 1)
            disc = Discriminator(in_channels=c, num_classes=k, width=g.width, minibatch_std=g.minibatch_std)
            step = GANStep(disc, lr=g.d_lr, augment=tuple(g.diffaugment))
            yv = _class_labels(self.y_val, g.val_samples, k)

            def validate(model: torch.nn.Module) -> dict[str, float]:
                x = model.generate(yv, torch.Generator().manual_seed(123))  # type: ignore[operator]
                return {
                    "frechet_distance": fidelity.frechet_distance(fidelity.classifier_features(self.clf, x), self.f_val)
                }

            model, rec = train_generator(
                self.run,
                name,
                lambda: Generator(in_channels=c, num_classes=k, image_size=s, latent_dim=g.latent_dim, width=g.width),
                tr,
                _seeded(g.train, cfg.seed),
                step_fn=step,
                validate=validate,
                num_classes=k,
                extra_modules={"discriminator": disc},
                progress=cfg.progress,
            )
            self.discriminator = disc
            return model, {**rec, "minibatch_std": g.minibatch_std, "diffaugment": list(g.diffaugment)}
        from medassist.synth.diffusion import ConditionalDiffusion, diffusion_step, diffusion_validation

        d = cfg.diffusion
        nv = min(512, len(self.val))
        return train_generator(
            self.run,
            name,
            lambda: ConditionalDiffusion(
                in_channels=c, num_classes=k, image_size=s, channels=d.channels, attention=d.attention
            ),
            tr,
            _seeded(d.train, cfg.seed),
            step_fn=diffusion_step,
            validate=diffusion_validation(self.x_val[:nv], self.t_yval[:nv]),
            num_classes=k,
            progress=cfg.progress,
        )

    def measure(self, name: str, model: Any, rec: dict[str, Any]) -> dict[str, Any]:
        """Sample, save (marked synthetic), and measure one generator."""
        cfg = self.cfg
        n = cfg.n_synthetic or len(self.train)
        kw: dict[str, Any] = {}
        if name == "diffusion":
            n, kw = min(n, cfg.diffusion.n_samples), {"steps": cfg.diffusion.ddim_steps}
        labels = _class_labels(self.y_train, n, self.k)
        images, secs = _sample(model, labels, cfg.seed + 7, **kw)
        y = labels.numpy()
        self.save_synthetic(name, images, y)
        x = to_tensor(images)
        feats = fidelity.classifier_features(self.clf, x)
        sub = np.sort(np.random.default_rng(cfg.seed).choice(n, min(n, cfg.eval_samples), replace=False))
        fs, xs, ys = feats[sub], x[sub], y[sub]
        probs = predict_proba(self.clf, x)
        dup, _ = fidelity.near_duplicate_rate(xs, self.x_test)
        out: dict[str, Any] = {
            **rec,
            "n_synthetic": n,
            "sample_seconds": secs,
            "sample_seconds_per_1000": 1000 * secs / n,
            "frechet_distance": fidelity.frechet_distance(fs, self.f_test),
            **fidelity.prdc(self.f_test, fs),
            "per_class": self._per_class(fs, ys),
            "conditional_accuracy": float((probs.argmax(1) == y).mean()),
            "near_duplicate_rate": dup,
        }
        out["privacy"] = self.privacy(name, model, xs, fs, label=_label(name, rec))
        if name.startswith("vae"):
            from medassist.synth.vae import active_units, vae_scores

            v = vae_scores(model, self.x_val, self.t_yval)
            out.update(
                active_units=active_units(v["mu"]),
                latent_dim=int(v["mu"].shape[1]),
                kl_per_dim=v["kl_dim"].mean(0).tolist(),
                val_neg_elbo=float(v["neg_elbo"].mean()),
            )
        unit, clf = self.classifier(f"tstr_{name}", Split(images, y.astype(np.int64)))
        p, h = _test_metrics(clf, self.test, cfg)
        out["tstr"] = {"test": h, "val_auc": unit.val["auc"], "unit": unit.row()}
        out["tstr_minus_trtr_auc"] = list(
            paired_bootstrap_difference(self.y_test, p, self.p_trtr, auc, n_boot=cfg.n_boot, seed=cfg.seed)
        )
        out["tstr_minus_trtr_accuracy"] = list(
            paired_bootstrap_difference(self.y_test, p, self.p_trtr, accuracy, n_boot=cfg.n_boot, seed=cfg.seed)
        )
        self.figures(name, model, images, y, xs, label=_label(name, rec))
        return out

    def privacy(self, name: str, model: Any, xs: torch.Tensor, fs: torch.Tensor, *, label: str = "") -> dict[str, Any]:
        """DCR (pixel and feature space) and membership-inference attacks of one generator."""
        cfg = self.cfg
        members_x, members_f = self.x_train[self.member_idx], self.f_train[self.member_idx]
        hold_x, hold_f = self.x_val, self.f_val  # the hold-out: see __init__
        out: dict[str, Any] = {
            "pixel": privacy.dcr_summary(xs, self.x_train, hold_x),
            "feature": privacy.dcr_summary(fs, self.f_train, hold_f),
            "attack_distance_pixel": privacy.distance_attack(xs, members_x, hold_x, n_boot=cfg.n_boot, seed=cfg.seed),
            "attack_distance_feature": privacy.distance_attack(fs, members_f, hold_f, n_boot=cfg.n_boot, seed=cfg.seed),
        }
        ym, yt = self.t_ytrain[self.member_idx], self.t_yval
        if name.startswith("vae"):
            from medassist.synth.vae import vae_scores

            sm, sn = -vae_scores(model, members_x, ym)["neg_elbo"], -vae_scores(model, hold_x, yt)["neg_elbo"]
            out["attack_model"] = {"kind": "ELBO", **privacy.auc_with_ci(sm.numpy(), sn.numpy(), n_boot=cfg.n_boot)}
        elif name == "diffusion":
            from medassist.synth.diffusion import diffusion_losses

            sm, sn = -diffusion_losses(model, members_x, ym), -diffusion_losses(model, hold_x, yt)
            out["attack_model"] = {
                "kind": "denoising loss",
                **privacy.auc_with_ci(sm.numpy(), sn.numpy(), n_boot=cfg.n_boot),
            }
        elif name == "gan":
            d = self.discriminator.eval()
            dev = model_device(d)  # where training left it: the run's device
            with torch.no_grad():
                # One batch of both groups, so that the minibatch-std feature is the same for every image scored.
                scores = d(torch.cat([members_x, hold_x]).to(dev), torch.cat([ym, yt]).to(dev)).cpu()
                sm, sn = scores[: len(ym)], scores[len(ym) :]
            out["attack_model"] = {
                "kind": "discriminator score",
                **privacy.auc_with_ci(sm.numpy(), sn.numpy(), n_boot=cfg.n_boot),
            }
        # The closest synthetic-training pairs in pixel space, for a person to look at.
        d_syn, idx = privacy.nearest(xs, self.x_train)
        order = np.argsort(d_syn)[:8]
        top = to_uint8(xs[order])
        bottom = self.train.images[idx[order]]
        plots.plot_pairs(
            top,
            bottom,
            [f"d={d_syn[i]:.2f}" for i in order],
            self.run.figure(f"closest_{name}"),
            title=f"{label or name}: the 8 synthetic images closest to a training image (top) and that training image "
            "(bottom)",
        )
        return out

    def figures(
        self, name: str, model: Any, images: np.ndarray, y: np.ndarray, xs: torch.Tensor, *, label: str = ""
    ) -> None:
        cfg, label = self.cfg, label or name
        rows = [images[y == c][: cfg.n_show] for c in range(self.k)]
        plots.plot_sample_grid(
            rows,
            self.data.class_names,
            self.run.figure(f"samples_{name}"),
            title=f"{label}: samples per class (synthetic)",
        )
        if name.startswith("vae"):
            idx = np.concatenate([np.flatnonzero(self.y_test == c)[: cfg.n_show // 2 or 1] for c in range(self.k)])
            dev = model_device(model)  # the VAE is where training left it: the run's device
            with torch.no_grad():
                model.eval()
                x, y = self.x_test[idx].to(dev), self.t_ytest[idx].to(dev)
                mu, _ = model.encode(x, y)
                rec = (torch.sigmoid(model.decode_logits(mu, y)) * 2 - 1).cpu()
            plots.plot_pairs(
                self.test.images[idx],
                to_uint8(rec),
                [self.data.class_names[c] for c in self.y_test[idx]],
                self.run.figure(f"reconstructions_{name}"),
                title=f"{label}: test images (top) and their reconstructions (bottom)",
            )

    def save_synthetic(self, name: str, images: np.ndarray, labels: np.ndarray) -> Path:
        path = self.run.path(f"synthetic/{name}{SYNTHETIC_SUFFIX}.npz")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                images=images,
                labels=labels,
                synthetic=np.ones(len(labels), dtype=bool),
                class_names=np.array(self.data.class_names),
                generator=np.array(name),
            )
        return path

    def augmentation(self) -> None:
        """Binary data: real + synthetic minority-class images (from the generator with the best TSTR validation
        AUC) against real alone, on test with the paired interval."""
        gens = self.metrics["generators"]
        if self.k != 2 or not gens or not self.cfg.augment:
            return
        best = max(gens, key=lambda g: gens[g]["tstr"]["val_auc"])
        # The choice rests on every generator's TSTR; an under-trained one is named so that the report says so.
        cut = sorted(g for g, r in gens.items() if r.get("under_trained"))
        counts = np.bincount(self.y_train, minlength=2)
        minority = int(counts.argmin())
        n_add = int(counts.max() - counts.min())
        with np.load(self.run.dir / "synthetic" / f"{best}{SYNTHETIC_SUFFIX}.npz") as z:
            pool = z["images"][z["labels"] == minority]
        if n_add == 0 or len(pool) == 0:
            return
        add = pool[np.random.default_rng(self.cfg.seed).choice(len(pool), n_add, replace=n_add > len(pool))]
        images = np.concatenate([self.train.images, add])
        labels = np.concatenate([self.y_train, np.full(n_add, minority)]).astype(np.int64)
        unit, clf = self.classifier("augmented", Split(images, labels))
        p, h = _test_metrics(clf, self.test, self.cfg)
        self.metrics["augmentation"] = {
            "generator": best,
            "under_trained_generators": cut,
            "minority_class": self.data.class_names[minority],
            "n_added": n_add,
            "test": h,
            "minus_real_auc": list(
                paired_bootstrap_difference(
                    self.y_test, p, self.p_trtr, auc, n_boot=self.cfg.n_boot, seed=self.cfg.seed
                )
            ),
            "minus_real_accuracy": list(
                paired_bootstrap_difference(
                    self.y_test, p, self.p_trtr, accuracy, n_boot=self.cfg.n_boot, seed=self.cfg.seed
                )
            ),
        }


def _curves(run: Run, name: str, label: str = "") -> None:
    import pandas as pd

    path = run.dir / "history" / f"{name}.csv"
    if not path.is_file():
        return
    h = pd.read_csv(path)
    if name.startswith("vae"):
        panels = [
            ("reconstruction (nats)", ["train_recon", "val_recon"]),
            ("KL (nats)", ["train_kl", "val_kl"]),
            ("KL weight", ["train_beta"]),
            ("active latent units", ["val_active_units"]),
        ]
    elif name == "gan":
        panels = [
            ("losses", ["train_loss", "train_d_loss"]),
            ("D(real), D(fake)", ["train_d_real", "train_d_fake"]),
            ("val Fréchet distance", ["val_frechet_distance"]),
        ]
    else:
        panels = [("denoising loss", ["train_loss", "val_loss"])]
    plots.plot_curves(h, panels, run.figure(f"curves_{name}"), title=f"{label or name}: training curves")


def _provenance(run: Run, data: ImageData | None, names: list[str]) -> None:
    files = "\n".join(f"- `synthetic/{n}{SYNTHETIC_SUFFIX}.*`" for n in names)
    atomic_write_text(
        run.dir / PROVENANCE,
        "# SYNTHETIC DATA — not real patient data\n\n"
        "Every file under `synthetic/` was generated by medassist's synthetic-data study (`medassist synth`) from "
        f"models trained on {data.name if data else 'the records named in config.yaml'}. The images and records "
        "there show no real patient, carry a `synthetic` column or array set to true and a `_synthetic` file-name "
        "suffix, and must not be presented as real data, used for a diagnosis, or merged into a real data set "
        "without this mark.\n\n" + files + "\n\nThe generator settings are in `config.yaml`; their measured "
        "fidelity and privacy are in `metrics.json` and `report.md`.\n",
    )


@on_device
def run_synth_study(cfg: SynthStudyConfig) -> Path:
    """Run the synthetic-data study (images, or patient records with ``data`` = padchest-records | records)."""
    if cfg.data in ("padchest-records", "records", "heart_disease"):
        from medassist.studies.synth_records import run_records_study

        return run_records_study(cfg)
    if cfg.data != "images":
        raise MedAssistError(f"unknown data '{cfg.data}'; choose images, padchest-records, heart_disease or records")
    t0 = time.perf_counter()
    data = _load(cfg)
    _check(cfg, data)
    run = Run.create(cfg.out, f"synth-{data.name}", to_dict(cfg), kind="synth", resume=cfg.resume or None)
    with run:
        run.write_json(
            "data.json",
            {
                "name": data.name,
                "class_names": data.class_names,
                "image_size": data.image_size,
                "channels": data.n_channels,
                "splits": {s: len(v) for s, v in data.splits.items()},
                "class_counts": {
                    s: np.bincount(v.labels.reshape(-1), minlength=data.num_classes).tolist()
                    for s, v in data.splits.items()
                },
            },
        )
        st = _Study(cfg, data, run)
        step("synth", "the classifier trained on real images", show=False)
        st.real()
        names = list(cfg.generators) + [f"vae_dp_eps{e:g}" for e in cfg.dp.epsilons]
        for name in tqdm(names, desc="generators", disable=not cfg.progress, leave=False):
            step("synth", f"{name}: training", show=False)
            model, rec = st.build(name)
            step("synth", f"{name}: fidelity, usefulness and privacy", show=False)
            m = st.measure(name, model, rec)
            (st.metrics["dp"] if name.startswith("vae_dp") else st.metrics["generators"])[name] = m
            _curves(run, name, _label(name, m))
            run.write_metrics({**st.metrics, "partial": True})
        step("synth", "augmentation with the best generator", show=False)
        st.augmentation()
        step("synth", "report", show=False)
        _provenance(run, data, names)
        st.metrics["wall_time"] = time.perf_counter() - t0
        st.metrics["data"] = run.read_json("data.json")
        run.write_metrics(st.metrics)
        from medassist.report.synth import write_synth_report

        write_synth_report(run.dir)
    return run.dir
