"""What a study trains and how: :class:`StudySettings`, the options of ``nnUNetv2_advmim_study`` in one place."""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

from nnunetv2_advmim.commands.study.protocol import arm_parts, is_protocol, parse_arm, parse_count


@dataclass
class StudySettings:
    """The settings of one study (module docstring of ``nnunetv2_advmim.commands.study``). Checked when made; what
    depends on the dataset is checked by ``Study``. ``arms``: ``(arm, counts it runs at)`` per ``trainers`` entry."""
    dataset: Union[int, str]
    configuration: str
    counts: Sequence
    trainers: Sequence[str]
    draws: int = 3
    plans: str = "nnUNetPlans"
    epochs: int = 50
    iterations: int = 50
    val_iterations: int = 5
    n_val: Optional[int] = None
    seed: int = 0
    pretrainers: Sequence[str] = ()
    finetuners: Sequence[str] = ("nnUNetTrainer",)
    pretrain_epochs: Optional[int] = None
    match_time: Optional[str] = None
    device: str = "cpu"
    output_folder: Optional[str] = None
    threads: Optional[int] = None
    npp: Optional[int] = None
    postprocess: bool = False
    runs: Sequence[str] = ()
    finetune_networks: Sequence[str] = ()
    arms: List[tuple] = field(init=False)

    def __post_init__(self):
        self.counts = [parse_count(c) for c in self.counts]
        if not self.counts:
            raise ValueError("give at least one labeled count (-n)")
        if any(is_protocol(n) for n in self.counts):
            if not all(is_protocol(n) for n in self.counts):
                raise ValueError(f"-n {' '.join(map(str, self.counts))}: a published protocol fixes the study's split, "
                                 f"so give protocols only (e.g. -n acdc-3 acdc-7 acdc-all)")
            if self.n_val is not None:
                raise ValueError("--n-val: a published protocol fixes the validation cases; leave --n-val out")
        if self.draws < 1:
            raise ValueError(f"--draws must be at least 1, got {self.draws}")
        if self.epochs < 1 or self.iterations < 1 or self.val_iterations < 1:
            raise ValueError("--epochs, --iterations and --val-iterations must be at least 1")
        self.arms = [parse_arm(t, self.counts) for t in self.trainers]
        self.pretrainers = list(self.pretrainers)
        self.finetuners = list(dict.fromkeys(self.finetuners))
        self.finetune_networks = list(self.finetune_networks)
        if self.pretrainers and not self.finetuners:
            raise ValueError("--pretrainer needs at least one --finetuner")
        if self.finetune_networks and not self.pretrainers:
            raise ValueError("--finetune-networks names networks of fine-tuned trainings: give --pretrainer too")
        if not self.arms and not self.pretrainers:
            raise ValueError("give at least one trainer (-tr) or pretrainer (--pretrainer)")
        if self.match_time and self.match_time not in [t for t, _ in self.arms]:
            raise ValueError(f"--match-time {self.match_time} must be one of the trainers (-tr)")
        if self.match_time and arm_parts(self.match_time)[1]:
            raise ValueError(f"--match-time {self.match_time}: name the trainer without ':network'")
        self.pretrain_epochs = self.pretrain_epochs or self.epochs
        # 0 = nnU-Net's sequential prediction: no worker start-up, the faster choice for small test sets on a CPU
        self.npp = (0 if self.device == "cpu" else 3) if self.npp is None else self.npp
