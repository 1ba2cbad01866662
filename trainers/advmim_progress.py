"""What ``nnUNetTrainerAdvMIM`` reports: per-term training losses, validation of the inference network with both
networks' pseudo Dice, the epoch's log line and ``progress_advmim.png`` (keys and plot groups in
``evaluation.progress``). A mixin of the trainer.
"""
from typing import List

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.utilities.collate_outputs import collate_outputs

from nnunetv2_advmim.architectures.ensemble import AdvMIMEnsemble
from nnunetv2_advmim.evaluation.progress import (advmim_log_keys, advmim_plot_groups, hard_tp_fp_fn, pseudo_dice,
                                                 plot_advmim_progress, step_keys)
from nnunetv2_advmim.methods.advmim import BRANCHES, full_resolution
from nnunetv2_advmim.runtime.distributed import all_gather
from nnunetv2_advmim.runtime.numerics import discriminator_collapsed


class AdvMIMProgress:
    """Training-loss means, validation and progress logging of ``nnUNetTrainerAdvMIM`` (module docstring)."""

    @staticmethod
    def step_terms(output: dict) -> dict:
        """``train_step``'s output as ``{"loss": float, "<branch>_<term>": float, ...}`` (syncs; for tests/debugging)."""
        return {"loss": float(output["loss"]), **dict(zip(step_keys(), output["advmim_terms"].tolist()))}

    def on_train_epoch_end(self, train_outputs: List[dict]):
        """nnU-Net's ``train_losses`` and our per-term means, from tensors kept on the device during the epoch
        (one transfer per epoch). Steps skipped as non-finite are left out of the means."""
        kept = [o for o in train_outputs if o.get("finite", True)] or train_outputs
        loss = torch.stack([o["loss"].float() for o in kept]).mean()
        values = torch.cat([loss[None], torch.stack([o["advmim_terms"] for o in kept]).mean(0)]).cpu().numpy()
        values = np.mean(np.stack(all_gather(values, self.is_ddp)), 0)
        self.logger.log("train_losses", float(values[0]), self.current_epoch)
        for k, v in zip(step_keys(), values[1:]):
            self.logger.log(f"advmim_{k}", float(v), self.current_epoch)
        self.logger.log("advmim_lambda_ct", float(np.mean(self._epoch_lambda_ct)) if self._epoch_lambda_ct else 0.0,
                        self.current_epoch)
        self._epoch_lambda_ct = []
        hist = self.logger.local_logger.my_fantastic_logging
        for b in self.discriminators:
            if discriminator_collapsed(hist.get(f"advmim_{b}_disc_loss", [])):
                self.print_to_log_file(f"WARNING: the {b} discriminator's loss has stayed near 0 for many epochs: "
                                       f"adversarial training has collapsed (D separates original and masked domain "
                                       f"perfectly, so its generator signal is uninformative). Consider a lower "
                                       f"disc_lr or lambda_adv, or nnUNetTrainerAdvMIM (no adversarial loss).")

    def on_validation_epoch_start(self):
        for m in self.branches.values():
            m.eval()
        self.network.eval()

    def validation_step(self, batch: dict) -> dict:
        data, target = self._to_device(batch["data"]), self._to_device(batch["target"])
        with self._autocast():
            outs = {b: net(data) for b, net in self.branches.items()}
            out = AdvMIMEnsemble.combine(outs["hybrid"], outs["cnn"]) if self.predict_with == "ensemble" \
                else outs[self.predict_with]
            loss = self.loss(out, target)
        t0 = target[0] if isinstance(target, list) else target
        result = {"loss": loss.detach().cpu().numpy()}
        for name, o in [("", out)] + [(f"_{b}", outs[b]) for b in BRANCHES]:
            tp, fp, fn = hard_tp_fp_fn(full_resolution(o), t0, self.label_manager)
            result.update({f"tp_hard{name}": tp, f"fp_hard{name}": fp, f"fn_hard{name}": fn})
        return result

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        outputs = collate_outputs(val_outputs)
        for b in BRANCHES:
            counts = [np.sum(outputs[f"{k}_hard_{b}"], 0) for k in ("tp", "fp", "fn")]
            tp, fp, fn = np.sum(all_gather(counts, self.is_ddp), 0)
            self.logger.log(f"advmim_{b}_pseudo_dice", pseudo_dice(tp, fp, fn), self.current_epoch)

    def on_epoch_end(self):
        log = self.logger.local_logger.my_fantastic_logging
        self.print_to_log_file("AdvMIM " + ", ".join(
            f"{k[7:]} {log[k][-1]:.4f}" for k in advmim_log_keys() if log.get(k)))
        super().on_epoch_end()  # increments current_epoch
        if self.local_rank == 0:
            plot_advmim_progress(log, advmim_plot_groups(), join(self.output_folder, "progress_advmim.png"))

    def _register_log_keys(self):
        for k in advmim_log_keys():
            self.logger.local_logger.my_fantastic_logging.setdefault(k, [])
