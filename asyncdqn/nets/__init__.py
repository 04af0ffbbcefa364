"""The K Q-networks as one batched ensemble module: MLPs (`mlp`), conv nets (`conv`), and the choice (`make`).

Place in the flow: used by actors (batched inference), the learner (training), the merge and checkpoints.
"""

from asyncdqn.nets.conv import TORSOS, EnsembleConv2d, EnsembleConvQNet, Torso, input_scale_for
from asyncdqn.nets.make import auto_torso, is_image_shape, make_qnet, qnet_from_spec
from asyncdqn.nets.mlp import EnsembleLinear, EnsembleQNet, GreedyPolicy, copy_params_, numpy_forward

__all__ = ["TORSOS", "EnsembleConv2d", "EnsembleConvQNet", "EnsembleLinear", "EnsembleQNet", "GreedyPolicy", "Torso",
           "auto_torso", "copy_params_", "input_scale_for", "is_image_shape", "make_qnet", "numpy_forward",
           "qnet_from_spec"]
