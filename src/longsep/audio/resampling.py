"""Band-limited resampling, of a whole signal or of one that arrives in chunks."""

from __future__ import annotations

import math

import torch
import torchaudio

LOWPASS_WIDTH = 6  # zero crossings of the sinc kernel (torchaudio's default)
ROLLOFF = 0.99  # kernel cut-off relative to the lower Nyquist frequency


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited (sinc) resampling of ``(..., samples)`` audio with torchaudio."""
    if orig_rate == new_rate:
        return audio
    return torchaudio.functional.resample(
        audio, int(orig_rate), int(new_rate), lowpass_filter_width=LOWPASS_WIDTH, rolloff=ROLLOFF
    )


class StreamResampler:
    """:func:`resample` of a signal that arrives in consecutive chunks.

    The output, concatenated, equals ``resample`` of the whole signal, cropped or
    zero-padded to ``out_length`` samples. ``total`` (input samples in all) must be known
    ahead, since the last chunk is padded like the whole signal's end. Input blocks are cut
    at multiples of the rates' reduced period and resampled with enough real neighbouring
    samples on each side to cover the sinc kernel, so only ``O(chunk)`` samples are held.
    """

    def __init__(
        self, orig_rate: int, new_rate: int, total: int, out_length: int | None = None
    ) -> None:
        common = math.gcd(int(orig_rate), int(new_rate))
        self.orig_rate, self.new_rate = int(orig_rate), int(new_rate)
        self.down, self.up = self.orig_rate // common, self.new_rate // common
        width = math.ceil(LOWPASS_WIDTH * self.down / (min(self.up, self.down) * ROLLOFF))
        self.context = self.down * math.ceil((width + self.down) / self.down)
        self.total = int(total)
        self.natural = math.ceil(self.total * self.up / self.down)  # resample()'s length
        self.out_length = self.natural if out_length is None else int(out_length)
        self.buffer: torch.Tensor | None = None  # input samples from buffer_start on
        self.buffer_start = -self.context
        self.received = self.done = self.emitted = 0

    def _emit(self, end: int) -> torch.Tensor:
        """Output for input samples ``done .. end`` (multiples of the period ``down``)."""
        lo = self.done - self.context - self.buffer_start
        segment = self.buffer[..., lo : lo + end - self.done + 2 * self.context]
        out = resample(segment, self.orig_rate, self.new_rate)
        skip = self.context * self.up // self.down
        out = out[..., skip : skip + (end - self.done) * self.up // self.down]
        keep = end - self.context - self.buffer_start
        self.buffer, self.buffer_start, self.done = self.buffer[..., keep:], end - self.context, end
        return out

    def _resample(self, chunk: torch.Tensor) -> torch.Tensor:
        """Buffer ``chunk``; resample the blocks whose kernel context is complete."""
        if self.buffer is None:
            self.buffer = chunk.new_zeros(*chunk.shape[:-1], self.context)
        self.buffer = torch.cat([self.buffer, chunk], -1)
        if self.received >= self.total:
            end = self.down * math.ceil(self.total / self.down)
            pad = end + self.context - (self.buffer_start + self.buffer.shape[-1])
            self.buffer = torch.nn.functional.pad(self.buffer, (0, pad))
        else:
            end = self.down * ((self.received - self.context) // self.down)
        return self._emit(end) if end > self.done else chunk.new_zeros(*chunk.shape[:-1], 0)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add the next ``(..., n)`` input samples; return the output they complete."""
        self.received += chunk.shape[-1]
        same_rate = self.orig_rate == self.new_rate  # then only the length may change
        out = chunk if same_rate else self._resample(chunk)
        out = out[..., : max(0, min(self.natural, self.out_length) - self.emitted)]
        if self.received >= self.total and self.emitted + out.shape[-1] < self.out_length:
            out = torch.nn.functional.pad(out, (0, self.out_length - self.emitted - out.shape[-1]))
        self.emitted += out.shape[-1]
        return out
