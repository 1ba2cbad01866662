"""Objects from every DDP rank: the one gathering pattern the trainers use for logged values and shared results."""
from typing import Any, List

import torch.distributed as dist


def all_gather(obj: Any, is_ddp: bool) -> List[Any]:
    """Every rank's ``obj`` in rank order under DDP (a collective: every rank must call it); ``[obj]`` otherwise."""
    if not is_ddp:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
