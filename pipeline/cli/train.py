"""`swapstream train`: train a swap model on two facesets (a Ray Train job, or in this process)."""

from __future__ import annotations

from swapstream.pipeline.cli.common import drop_none


def add(sub) -> None:
    p = sub.add_parser("train", help="train a swap model on two facesets (a Ray Train job)",
                       description="Train the shared-encoder / two-decoder model on facesets A "
                                   "and B, as a Ray Train job: one worker on this machine by "
                                   "default, --workers N for data-parallel training, --address to "
                                   "run on a cluster. The model, preview.png, loss_curve.png and "
                                   "history.jsonl go to the output directory; Ray keeps the last "
                                   "checkpoints in <output>.train (or --storage). Running the same "
                                   "command again resumes.")
    p.add_argument("--a", required=True, help="faceset of identity A")
    p.add_argument("--b", required=True, help="faceset of identity B")
    p.add_argument("-o", "--output", required=True, help="checkpoint directory")
    p.add_argument("--preset", default="lite64", help="lite64 (CPU) | original64 | hd128 | hd256 (GPU)")
    p.add_argument("--steps", type=int, default=1000, help="total training steps (1000)")
    p.add_argument("--batch-size", type=int, default=16, help="faces per identity per step, per worker (16)")
    p.add_argument("--lr", type=float, default=5e-5, help="Adam learning rate (5e-5)")
    p.add_argument("--coverage", type=float, default=0.7, help="crop coverage of the face (0.7)")
    p.add_argument("--face", choices=["face", "whole"], default="face",
                   help="what the crop frames: face (brows to chin, the 2017 crop) or whole (the "
                        "forehead too: a smaller face, lower in the crop); convert uses the same")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps (250)")
    p.add_argument("--preview-every", type=int, default=250, help="preview.png every N steps (250)")
    p.add_argument("--log-every", type=int, default=10,
                   help="history.jsonl / TensorBoard / progress row every N steps (10)")
    p.add_argument("--device", default="auto", help="--runner local: auto | cpu | cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (and save) after this many minutes of training, even before --steps")
    p.add_argument("--resume", action="store_true",
                   help="fail unless there is a checkpoint to continue (one is continued anyway)")
    g = p.add_argument_group("losses")
    g.add_argument("--ssim-weight", type=float, help="weight of the DSSIM term next to MAE (2.0)")
    g.add_argument("--mask-weight", type=float, help="weight of the mask loss (0.5)")
    g.add_argument("--face-boost", type=float, help="extra weight of pixels inside the face")
    g.add_argument("--feature-boost", type=float, help="extra weight of eyes and mouth")
    g.add_argument("--gan-weight", type=float, help="> 0 adds a patch-discriminator GAN term (off)")
    g.add_argument("--perceptual-weight", type=float,
                   help="weight of the perceptual term: dlib's face recogniser's early features of "
                        "each reconstruction against its target (PERCEPTUAL_DEFAULT); 0: off")
    g.add_argument("--identity-weight", type=float,
                   help="weight of the identity term: A's face drawn by B's decoder pulled toward B's "
                        "embedding by dlib's recogniser (IDENTITY_DEFAULT); 0: off")
    g.add_argument("--occluders", type=float,
                   help="share of input faces with a random occluder pasted over them (0.3), cut "
                        "from the mask target so the learned mask leaves occluders out; 0: off")
    g = p.add_argument_group("speed (GPU)")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision on CUDA (auto: bf16 where supported, else fp16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("Ray Train")
    g.add_argument("--runner", choices=["ray", "local"], default="ray",
                   help="ray: a Ray Train job (default); local: this process only")
    g.add_argument("--workers", type=int, default=1, help="data-parallel workers (1)")
    g.add_argument("--gpu", action="store_true", help="one GPU per worker")
    g.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    g.add_argument("--storage", help="where Ray keeps checkpoints (default <output>.train; on a "
                                     "cluster a shared folder or s3://bucket/path)")
    g.add_argument("--keep", type=int, default=3, help="checkpoints kept in storage (3)")
    g.add_argument("--max-failures", type=int, default=3,
                   help="worker failures to survive by restarting from the last checkpoint (3)")
    g.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files here")
    p.set_defaults(func=run)


def run(a) -> int:
    from swapstream.training.loop import TrainConfig, train

    opt = drop_none({"ssim_weight": a.ssim_weight, "mask_weight": a.mask_weight,
                      "face_boost": a.face_boost, "feature_boost": a.feature_boost,
                      "gan_weight": a.gan_weight, "amp": a.amp, "occluders": a.occluders})
    opt |= drop_none({"perceptual_weight": a.perceptual_weight, "identity_weight": a.identity_weight})
    cfg = TrainConfig(a=a.a, b=a.b, out=a.output, preset=a.preset, steps=a.steps,
                      batch_size=a.batch_size, lr=a.lr, coverage=a.coverage, face=a.face,
                      save_every=a.save_every,
                      preview_every=a.preview_every, log_every=a.log_every, device=a.device, seed=a.seed,
                      resume=a.resume, max_seconds=a.max_minutes * 60 if a.max_minutes is not None else None,
                      compile=a.compile,
                      workers=a.workers, gpu=a.gpu, address=a.address, storage=a.storage, keep=a.keep,
                      max_failures=a.max_failures, tensorboard=a.tensorboard, **opt)
    from swapstream.core.errors import ConfigError

    if a.runner == "ray" and a.device not in ("auto", "cpu"):
        raise ConfigError(f"--device {a.device} is for --runner local; a Ray Train job uses "
                          f"--gpu (one GPU per worker)")
    if a.runner == "local":
        if a.workers != 1 or a.gpu or a.address:
            raise ConfigError("--workers, --gpu and --address need --runner ray (the default)")
        r = train(cfg, progress=not a.quiet)
    else:
        from swapstream.training.job import train_job

        r = train_job(cfg, progress=not a.quiet, verbose=a.verbose)
    last = r.history[-1] if r.history else {}
    print(f"trained to step {r.step} ({r.samples_per_s:.0f} samples/s); "
          f"loss A {last.get('loss_a', float('nan')):.4f}, loss B {last.get('loss_b', float('nan')):.4f}"
          f"{f'; {r.skipped} steps skipped (NaN)' if r.skipped else ''}; checkpoint {r.checkpoint}; "
          f"preview {r.preview}; loss curve {r.checkpoint / 'loss_curve.png'}")
    return 0
