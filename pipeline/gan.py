"""Stage `gan`: train the GAN sweep's best config (a GRU generator drawing row by row), then score it.

    python pipeline/gan.py data/prepared/mnist.npz models/mnist/classifier.pt search/gan/best.yaml models/gan.pt metrics

The dataset is `gan.dataset` in params.yaml; the architecture and learning rates come from gan_search's best.yaml. FID and Inception Score use the features and class probabilities of
the classifier the `train` stage trained on that dataset (nothing is downloaded). Writes the generator and
discriminator checkpoint, and in the metrics directory gan.json, gan_log.csv and gan_samples.png.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import torch  # noqa: E402

from grutune.config import GanTrialConfig, load_params, read_best  # noqa: E402
from grutune.data import load_prepared  # noqa: E402
from grutune.errors import GrutuneError, cli  # noqa: E402
from grutune.gan import generate, image_grid, optimizers, score, train_gan  # noqa: E402
from grutune.io import atomic_path, write_json  # noqa: E402
from grutune.models import Discriminator, GRUGenerator, build_classifier  # noqa: E402
from grutune.tracking import init_wandb, log_model, write_csv  # noqa: E402
from grutune.training import Split, load_checkpoint, pick_device, save_checkpoint  # noqa: E402

GRID = 8  # samples per side of the PNG grid


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", type=Path, help="the prepare stage's .npz for gan.dataset")
    ap.add_argument("classifier", type=Path, help="the train stage's classifier for gan.dataset")
    ap.add_argument("best", type=Path, help="the gan_search stage's best.yaml")
    ap.add_argument("model_out", type=Path)
    ap.add_argument("metrics_dir", type=Path)
    ap.add_argument("--wandb-dir", type=Path, default=Path("."))
    args = ap.parse_args()
    params = load_params()
    p = params.gan
    _, hp = read_best(args.best, GanTrialConfig)
    data = load_prepared(args.prepared)
    if data.name != p.dataset:
        raise GrutuneError(f"{args.prepared} holds {data.name!r} but gan.dataset is {p.dataset!r}")
    device = pick_device()
    ckpt = load_checkpoint(args.classifier, device)
    if ckpt.get("data_hash") != data.content_hash:
        raise GrutuneError(f"{args.classifier} was trained on other data ({ckpt.get('data_hash')}) than "
                           f"{args.prepared} ({data.content_hash}): rerun the train stage")
    clf = build_classifier(ckpt["model_kwargs"]).to(device)
    clf.load_state_dict(ckpt["model"])

    torch.manual_seed(params.seed)
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    G = GRUGenerator(out_shape=shape, noise_dim=p.noise_dim, hidden_size=hp.hidden_size,
                     num_layers=hp.num_layers).to(device)
    D = Discriminator(in_shape=shape, backbone=hp.backbone).to(device)
    train, test = Split.of(data.x_train, data.y_train, device), Split.of(data.x_test, data.y_test, device)
    run = init_wandb(params.tracking.wandb, project=params.tracking.project, group=f"gan-{data.name}",
                     job_type="gan", name=f"gan-{data.name}", directory=args.wandb_dir,
                     config={**p.model_dump(), **hp.model_dump(), "data_hash": data.content_hash})
    print(f"training the GAN on {min(p.train_subset or len(train), len(train))} images/epoch of {data.name} "
          f"for {p.epochs} epochs on {device}")

    def on_epoch(m: dict) -> None:
        print(f"epoch {m['epoch']:>3}/{p.epochs}  d_loss {m['d_loss']:.4f}  g_loss {m['g_loss']:.4f}  "
              f"D(real) {m['d_real']:.3f}  D(fake) {m['d_fake']:.3f}  {m['images_per_s']:.0f} img/s", flush=True)
        if run is not None:
            run.log({k: v for k, v in m.items() if k != "epoch"}, step=m["epoch"])

    opt_g, opt_d = optimizers(G, D, lr_g=hp.lr_g, lr_d=hp.lr_d)
    history = train_gan(G, D, opt_g, opt_d, train, epochs=p.epochs, batch_size=p.batch_size, seed=params.seed,
                        subset=p.train_subset, on_epoch=on_epoch)
    metrics = score(G, clf, test, train, n=p.eval_samples, seed=params.seed)
    samples = generate(G, GRID * GRID, seed=params.seed + 1, device=device).cpu().numpy()
    grid = image_grid(samples, GRID)

    save_checkpoint(args.model_out, G, discriminator=D.state_dict(), discriminator_kwargs=dict(D.kwargs),
                    epoch=p.epochs, dataset=data.name, data_hash=data.content_hash)
    write_json(args.metrics_dir / "gan.json", metrics)
    write_csv(args.metrics_dir / "gan_log.csv", history, fieldnames=list(history[0]))
    with atomic_path(args.metrics_dir / "gan_samples.png") as tmp:
        matplotlib.image.imsave(tmp, grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray",
                                vmin=0, vmax=1, format="png")
    if run is not None:
        import wandb

        run.summary.update(metrics)
        run.log({"samples": wandb.Image(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)})
        if params.tracking.log_models:
            log_model(run, args.model_out, name=f"gan-{data.name}", metadata={"data_hash": data.content_hash, **metrics})
        run.finish()
    print(f"fid {metrics['fid']:.3f} (real train vs test: {metrics['reference_fid_train_vs_test']:.3f})  "
          f"inception_score {metrics['inception_score']:.3f} (real test: "
          f"{metrics['reference_inception_score_test']:.3f})  -> {args.model_out}, {args.metrics_dir / 'gan.json'}")


if __name__ == "__main__":
    main()
