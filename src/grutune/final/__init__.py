"""The final stages' runs (`train`, `gan`, `gan_eval`): where they run, and the classifier's.

- `runner`: the seam. A stage hands its job to the runner `runner_for` chooses: in this process, or on the Ray
  cluster it joined (`InProcess`, `OnRayTrain`);
- `ray_train`: the protocol of a job on Ray Train (run names, a checkpoint each epoch, resumes after a lost node);
- `classifier`: the train stage's job, the sweep's pick retrained on train+val and tested;
- `checkpoints`: a final model's checkpoint, saved and loaded back, and a resumable run's random state.

The GAN's jobs are in grutune.gan.final. This file imports nothing, so that importing one module of the package
(the GAN stages read the classifier through `checkpoints`) brings in no other.
"""
