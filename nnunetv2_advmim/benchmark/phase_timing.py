"""Source text shared by the trainer variants that the benchmark scripts write into their work folders (acdc_gpu,
training_loop): methods that log the seconds of each epoch's training phase (its iterations only, after a device
synchronisation), so a script reads seconds per iteration from the training log without the data loader's start,
the validation and the checkpoints around them."""

PHASE_METHODS = '''
    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._sync()
        self._phase_t0 = time.perf_counter()

    def on_train_epoch_end(self, train_outputs):
        self._sync()
        self.print_to_log_file(f"<TAG> epoch {self.current_epoch} train phase "
                               f"{time.perf_counter() - self._phase_t0:.4f} s, {len(train_outputs)} iterations<NOTE>")
        super().on_train_epoch_end(train_outputs)
'''


def phase_logging_methods(tag: str, note: str = "") -> str:
    """The methods, indented for a class body, that end each epoch's training phase with the log line
    ``<tag> epoch E train phase S s, N iterations<note>``; ``note`` is f-string text (it may name ``self``). The
    generated module must import ``time`` and ``torch``."""
    return PHASE_METHODS.replace("<TAG>", tag).replace("<NOTE>", note)
