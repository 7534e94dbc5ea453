#!/usr/bin/python3
"""Writes the reference vectors and audio files that tests/audio/*.c read.

Run with Debian's python3-torch and python3-torchaudio (0.13):

    /usr/bin/python3 scripts/gen_audio_vectors.py      (from the repository root)

Outputs, under tests/data/audio/:
  spectrogram.safetensors  test signals and, computed by torchaudio in f32:
      spec_*   torchaudio.transforms.Spectrogram      (n_freqs, frames)
      fb_*     torchaudio.functional.melscale_fbanks  (n_freqs, n_mels)
      mel_*    torchaudio.transforms.MelSpectrogram   (n_mels, frames)
      db_*     MelSpectrogram + AmplitudeToDB          (n_mels, frames)
      ln_*     log(clamp(mel, floor))                   (n_mels, frames)
      whisper_* Whisper's log_mel_spectrogram recipe on torchaudio features
    Each case's settings are in the __metadata__ as JSON under its name; the
    C test reads them from there, so this file is the only place they live.
  decode.safetensors       what torchaudio.load gives for each audio file,
                           averaged over channels (mono), and the SNR of
                           torchaudio.functional.resample against the ideal
                           band-limited signal (metadata), the bar that
                           trimodal's resampler is held to.
  augment.safetensors      time stretch by torchaudio's phase vocoder
                           (functional.phase_vocoder between torch.stft and
                           torch.istft, n_fft 512, hop 128, Hann), the
                           method trimodal implements.
  *.wav *.flac *.ogg       short files in each encoding the decoder supports,
                           written by torchaudio.save (sox) or Python's wave.
Also writes the seeds of fuzz/fuzz_audio.c under fuzz/corpus/audio/.
"""
import io
import json
import math
import os
import struct
import wave

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF
import torchaudio.transforms as AT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "audio")
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "audio")


def write_safetensors(path, tensors, metadata):
    """A minimal safetensors writer (F32 only): header keys sorted, data in
    the same order, header padded with spaces to a multiple of 8."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        blob = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ------------------------------------------------------------ test signals

def signals():
    rng = np.random.RandomState(1234)
    sr = 16000
    t = np.arange(8000) / sr                      # 0.5 s
    f0, f1 = 50.0, 7500.0                         # linear chirp
    phase = 2 * math.pi * (f0 * t + (f1 - f0) / (2 * 0.5) * t * t)
    chirp = 0.5 * np.sin(phase) + 1e-3 * rng.standard_normal(8000)
    noise = rng.uniform(-0.5, 0.5, 4800)          # 0.3 s
    t = np.arange(6400) / sr                      # 0.4 s
    tones = (0.3 * np.sin(2 * math.pi * 440 * t) + 0.2 * np.sin(2 * math.pi * 1000 * t + 0.5)
             + 0.1 * np.sin(2 * math.pi * 3000 * t + 1.0) + 1e-3 * rng.standard_normal(6400))
    t = np.arange(16000) / sr                     # 1 s, for the default params
    second = (0.25 * np.sin(2 * math.pi * (200 * t + 1500 * t * t))
              + 0.2 * np.sin(2 * math.pi * 660 * t) + 0.01 * rng.standard_normal(16000))
    f32 = lambda a: a.astype(np.float32)
    return {"sig_chirp": f32(chirp), "sig_noise": f32(noise), "sig_tones": f32(tones),
            "sig_second": f32(second)}


WINDOWS = {"hann": torch.hann_window, "hamming": torch.hamming_window,
           "rect": lambda n: torch.ones(n)}


def spectrogram_cases(sig):
    out, meta = {}, {}
    cases = [
        # name, signal, n_fft, win_length, hop, center, pad_mode, power, window
        ("spec_a", "sig_chirp", 400, 400, 160, True, "reflect", 2.0, "hann"),
        ("spec_b", "sig_noise", 512, 400, 128, True, "reflect", 1.0, "hann"),
        ("spec_c", "sig_tones", 256, 256, 100, True, "constant", 2.0, "hann"),
        ("spec_d", "sig_chirp", 400, 300, 160, False, "reflect", 2.0, "hann"),
        ("spec_e", "sig_tones", 255, 200, 64, True, "reflect", 2.0, "hamming"),
        ("spec_f", "sig_noise", 64, 64, 16, True, "reflect", 1.5, "rect"),
    ]
    for name, s, n_fft, win, hop, center, pad, power, window in cases:
        tr = AT.Spectrogram(n_fft=n_fft, win_length=win, hop_length=hop, center=center,
                            pad_mode=pad, power=power, window_fn=WINDOWS[window])
        out[name] = tr(torch.from_numpy(sig[s])).numpy()
        meta[name] = dict(signal=s, n_fft=n_fft, win_length=win, hop=hop, center=int(center),
                          pad_mode=pad, power=power, window=window)
    return out, meta


def filterbank_cases():
    out, meta = {}, {}
    cases = [
        # name, n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale
        ("fb_htk", 201, 0.0, 8000.0, 64, 16000, None, "htk"),
        ("fb_slaney_slaney", 201, 0.0, 8000.0, 64, 16000, "slaney", "slaney"),
        ("fb_slaney", 201, 0.0, 8000.0, 64, 16000, None, "slaney"),
        ("fb_htk_slaney", 201, 0.0, 8000.0, 64, 16000, "slaney", "htk"),
        ("fb_whisper80", 201, 0.0, 8000.0, 80, 16000, "slaney", "slaney"),
        ("fb_range", 257, 20.0, 7600.0, 80, 16000, "slaney", "slaney"),
        ("fb_22k", 257, 30.0, 11025.0, 128, 22050, None, "htk"),
        ("fb_empty", 129, 0.0, 8000.0, 128, 16000, "slaney", "slaney"),
    ]
    import warnings
    for name, n_freqs, f_min, f_max, n_mels, sr, norm, scale in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fb_empty has all-zero filters on purpose
            fb = AF.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sr, norm, scale)
        out[name] = fb.numpy()
        meta[name] = dict(n_freqs=n_freqs, f_min=f_min, f_max=f_max, n_mels=n_mels,
                          sample_rate=sr, norm=norm or "none", mel_scale=scale)
    return out, meta


def mel_cases(sig):
    out, meta = {}, {}
    cases = [
        # name, signal, n_fft, win, hop, n_mels, f_min, f_max, norm, scale, power, log
        ("mel_a", "sig_chirp", 400, 400, 160, 64, 0.0, None, None, "htk", 2.0, None),
        ("mel_b", "sig_tones", 512, 400, 128, 80, 20.0, 7600.0, "slaney", "slaney", 1.0, None),
        ("db_a", "sig_chirp", 400, 400, 160, 64, 0.0, None, None, "htk", 2.0, ("db", 1e-10, 80.0)),
        ("db_b", "sig_tones", 512, 400, 128, 80, 20.0, 7600.0, "slaney", "slaney", 1.0,
         ("db", 1e-10, 0.0)),
        ("ln_c", "sig_noise", 256, 256, 64, 40, 0.0, None, "slaney", "htk", 2.0,
         ("ln", 1e-6, 0.0)),
    ]
    for name, s, n_fft, win, hop, n_mels, f_min, f_max, norm, scale, power, log in cases:
        tr = AT.MelSpectrogram(sample_rate=16000, n_fft=n_fft, win_length=win, hop_length=hop,
                               f_min=f_min, f_max=f_max, n_mels=n_mels, power=power, norm=norm,
                               mel_scale=scale)
        mel = tr(torch.from_numpy(sig[s]))
        m = dict(signal=s, n_fft=n_fft, win_length=win, hop=hop, n_mels=n_mels, f_min=f_min,
                 f_max=f_max or 0.0, norm=norm or "none", mel_scale=scale, power=power,
                 log="none", log_floor=1e-10, top_db=0.0)
        if log is not None:
            kind, floor, top_db = log
            if kind == "db":
                stype = "power" if power == 2.0 else "magnitude"
                mel = AT.AmplitudeToDB(stype=stype, top_db=top_db or None)(mel)
            else:
                mel = torch.log(torch.clamp(mel, min=floor))
            m.update(log=kind, log_floor=floor, top_db=top_db)
        out[name] = mel.numpy()
        meta[name] = m
    return out, meta


def whisper_log_mel(audio, n_mels, frames):
    """Whisper's log_mel_spectrogram after its pad_or_trim, with torchaudio's
    Slaney filterbank in place of the librosa one Whisper ships."""
    n = frames * 160
    x = torch.from_numpy(audio)
    x = x[:n] if x.numel() >= n else torch.nn.functional.pad(x, (0, n - x.numel()))
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    filters = AF.melscale_fbanks(201, 0.0, 8000.0, n_mels, 16000, "slaney", "slaney").T
    mel_spec = filters @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


def whisper_cases(sig):
    out, meta = {}, {}
    for name, s, n_mels, frames in [("whisper_pad", "sig_chirp", 80, 60),
                                    ("whisper_trim", "sig_tones", 80, 30),
                                    ("whisper_default", "sig_second", 64, 100)]:
        out[name] = whisper_log_mel(sig[s], n_mels, frames)
        meta[name] = dict(signal=s, n_mels=n_mels, target_frames=frames)
    return out, meta


# ------------------------------------------------------------ audio files

def tone(sr, n, channels, freqs=(440.0, 1250.0), amp=0.4):
    t = np.arange(n) / sr
    chans = []
    for c in range(channels):
        x = sum(amp / (i + 1) * np.sin(2 * math.pi * f * (1 + 0.1 * c) * t + c)
                for i, f in enumerate(freqs))
        chans.append(x)
    return torch.from_numpy(np.stack(chans).astype(np.float32))


def write_wave_pcm16(path, x, sr):
    """PCM 16 through Python's wave module (no sox involved)."""
    a = np.clip(np.round(x.numpy().T * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(a.tobytes())


FILES = [
    # name, sample rate, frames, channels, how
    ("pcm16_mono.wav", 16000, 1600, 1, "wave"),
    ("pcm8_mono.wav", 16000, 800, 1, dict(encoding="PCM_U", bits_per_sample=8)),
    ("pcm24_stereo_44k.wav", 44100, 2205, 2, dict(encoding="PCM_S", bits_per_sample=24)),
    ("pcm32_mono_8k.wav", 8000, 800, 1, dict(encoding="PCM_S", bits_per_sample=32)),
    ("float_stereo_48k.wav", 48000, 2400, 2, dict(encoding="PCM_F", bits_per_sample=32)),
    ("double_mono.wav", 16000, 400, 1, dict(encoding="PCM_F", bits_per_sample=64)),
    ("three_channels.wav", 16000, 800, 3, "wave"),
    ("flac16_mono.flac", 16000, 1600, 1, dict(format="flac", bits_per_sample=16)),
    ("flac24_stereo_48k.flac", 48000, 2400, 2, dict(format="flac", bits_per_sample=24)),
    ("vorbis_mono_22k.ogg", 22050, 4410, 1, dict(format="vorbis")),
]


def audio_files():
    out, meta = {}, {}
    for name, sr, n, ch, how in FILES:
        path = os.path.join(DATA, name)
        x = tone(sr, n, ch)
        if how == "wave":
            write_wave_pcm16(path, x, sr)
        else:
            torchaudio.save(path, x, sr, **how)
        y, got_sr = torchaudio.load(path)
        assert got_sr == sr, (name, got_sr)
        out["file_" + name] = y.mean(dim=0).numpy()
        meta["file_" + name] = dict(sample_rate=sr, channels=y.shape[0], frames=y.shape[1])
    return out, meta


def resample_bars():
    """SNR (dB) of torchaudio.functional.resample (its default sinc_interpolation,
    lowpass_filter_width 6, rolloff 0.99) against the ideal tones at 16 kHz, away
    from the edges: the bar for trimodal's resampler on the same signals."""
    bars = {}
    for sr in (44100, 48000, 22050, 8000):
        n = sr // 2
        freqs = (440.0, 1250.0, 3000.0) if sr > 8000 else (440.0, 1250.0, 3000.0)
        x = tone(sr, n, 1, freqs)
        y = AF.resample(x, sr, 16000)[0].numpy().astype(np.float64)
        ideal = tone(16000, y.shape[0], 1, freqs)[0].numpy().astype(np.float64)
        e = slice(800, y.shape[0] - 800)
        snr = 10 * math.log10(np.sum(ideal[e] ** 2) / np.sum((y[e] - ideal[e]) ** 2))
        bars["resample_snr_%d" % sr] = "%.2f" % snr
    return bars


def stretch_cases(sig):
    out, meta = {}, {}
    x = torch.from_numpy(sig["sig_tones"][:4000])
    w = torch.hann_window(512)
    spec = torch.stft(x, 512, 128, window=w, center=True, pad_mode="reflect",
                      return_complex=True)
    advance = torch.linspace(0, math.pi * 128, 257)[..., None]
    for name, rate in (("stretch_0.8", 0.8), ("stretch_1.25", 1.25), ("stretch_2", 2.0)):
        v = AF.phase_vocoder(spec, rate, advance)
        length = int(round(x.numel() / rate))
        out[name] = torch.istft(v, 512, 128, window=w, length=length).numpy()
        meta[name] = dict(rate=rate)
    out["stretch_input"] = x.numpy()
    return out, meta


def fuzz_seeds():
    os.makedirs(CORPUS, exist_ok=True)
    for name in ("pcm16_mono.wav", "pcm8_mono.wav", "float_stereo_48k.wav", "flac16_mono.flac",
                 "vorbis_mono_22k.ogg"):
        with open(os.path.join(DATA, name), "rb") as f:
            data = f.read()
        # Keep the seeds tiny: headers and a little audio (the FLAC and Ogg ones
        # whole, they are small and their checksums matter).
        if name.endswith(".wav"):
            data = data[:600]
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
    x = tone(16000, 200, 2)
    buf = io.BytesIO()
    write_wave_pcm16(buf, x, 16000)
    with open(os.path.join(CORPUS, "stereo_tiny.wav"), "wb") as f:
        f.write(buf.getvalue())


def main():
    torch.manual_seed(0)
    os.makedirs(DATA, exist_ok=True)
    sig = signals()
    tensors, meta = dict(sig), {}
    for fn in (spectrogram_cases, mel_cases, whisper_cases):
        t, m = fn(sig)
        tensors.update(t)
        meta.update(m)
    t, m = filterbank_cases()
    tensors.update(t)
    meta.update(m)
    write_safetensors(os.path.join(DATA, "spectrogram.safetensors"), tensors,
                      {k: json.dumps(v) for k, v in meta.items()})
    t, m = audio_files()
    bars = resample_bars()
    meta = {k: json.dumps(v) for k, v in m.items()}
    meta.update(bars)
    write_safetensors(os.path.join(DATA, "decode.safetensors"), t, meta)
    t, m = stretch_cases(sig)
    write_safetensors(os.path.join(DATA, "augment.safetensors"), t,
                      {k: json.dumps(v) for k, v in m.items()})
    fuzz_seeds()
    print("torch %s, torchaudio %s" % (torch.__version__, torchaudio.__version__))
    for k, v in sorted(bars.items()):
        print("%s: %s dB" % (k, v))


if __name__ == "__main__":
    main()
