"""Private helpers shared by the scipy mirrors of :mod:`research_ext.complex`.

``arguments`` (dtype/dim/``n=``/``norm=`` checks), ``callables`` (user callables in scipy's
argument slots), ``caching`` (memoised index and twiddle tensors) and ``fft_lengths``
(``next_fast_len`` and the device-aware FFT length planner).
"""
