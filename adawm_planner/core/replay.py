"""Replay buffer of environment steps (numpy ring), sampled as fixed-length sequences.

Each step holds the observation, the action that led to it (a zero vector at an episode start), the reward
received on arriving, `is_first` and `is_terminal` (the world model's time convention). Sequences may run
across episode boundaries: `is_first` resets the latent state there.

While finetuning leaves the encoder frozen, a frame's embedding never changes, so the buffer can keep it
(cache_embeddings): each stored step is embedded once, when a batch first holds it, instead of in every
batch that samples it (the encoder is ~¾ of filtering a batch).
"""
import numpy as np
import torch


class Replay:
    def __init__(self, capacity, bev_shape, ego_dim, action_dim, seed=0):
        self.capacity = capacity
        self.bev = np.zeros((capacity, *bev_shape), np.uint8)
        self.ego = np.zeros((capacity, ego_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.is_first = np.zeros(capacity, bool)
        self.is_terminal = np.zeros(capacity, bool)
        self.size = 0
        self.next = 0  # index the next step is written to
        self.rng = np.random.default_rng(seed)
        self.embed_frames, self.embedding = None, None
        self.embedded = np.zeros(capacity, bool)

    def __len__(self):
        return self.size

    def add(self, obs, action, reward, is_first, is_terminal):
        i = self.next
        self.bev[i], self.ego[i], self.action[i] = obs['bev'], obs['ego'], action
        self.reward[i], self.is_first[i], self.is_terminal[i] = reward, is_first, is_terminal
        self.embedded[i] = False
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample_indices(self, batch, length, rng=None):
        """(batch, length) buffer indices of sequences that never span the write position."""
        if self.size < length:
            raise ValueError(f'replay holds {self.size} steps, fewer than one sequence of {length}')
        oldest = self.next if self.size == self.capacity else 0
        starts = (rng or self.rng).integers(0, self.size - length + 1, size=batch)
        return (oldest + starts[:, None] + np.arange(length)) % self.capacity

    def newest(self, length):
        """The newest `length` steps as one sequence (batch 1)."""
        return self.gather(((self.next - length + np.arange(length)) % self.capacity)[None])

    def sample(self, batch, length):
        return self.gather(self.sample_indices(batch, length))

    def cache_embeddings(self, embed_frames):
        """From now on batches carry 'embed' (B, T, E): `embed_frames(bev, ego)` (numpy (N, ...) in, float
        tensor (N, E) out) of each step, kept until the step is overwritten. Only valid while the function
        stays the same (a frozen encoder)."""
        self.embed_frames, self.embedding = embed_frames, None
        self.embedded[:] = False

    def _embeddings(self, index):
        missing = np.unique(index[~self.embedded[index]])
        if len(missing):
            values = self.embed_frames(self.bev[missing], self.ego[missing]).numpy()
            if self.embedding is None:   # pages are touched only as rows are written
                self.embedding = np.empty((self.capacity, values.shape[-1]), np.float32)
            self.embedding[missing] = values
            self.embedded[missing] = True
        return torch.from_numpy(self.embedding[index])

    def gather(self, index):
        batch = {'bev': self.bev[index], 'ego': self.ego[index], 'action': self.action[index],
                 'reward': self.reward[index], 'is_first': self.is_first[index],
                 'is_terminal': self.is_terminal[index]}
        batch = {k: torch.from_numpy(v) for k, v in batch.items()}
        if self.embed_frames is not None:
            batch['embed'] = self._embeddings(index)
        # The first step of a sampled sequence starts the filter from an empty state.
        batch['is_first'][:, 0] = True
        return batch
