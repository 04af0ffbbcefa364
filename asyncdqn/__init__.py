"""asyncdqn: parallel DQN with K Q-networks, one shared replay pool and a softmax-weighted target."""

__version__ = "0.1.0"
