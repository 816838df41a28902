"""The synthetic-set stage: how much of a synthetic dataset made with the model is copies.

A synthetic dataset is made from a report corpus by drawing its report texts as prompts (each
text as often as reports carry it) and generating one image per draw. The stage draws
``synthetic.n_images`` prompts with replacement, with probability proportional to
``n_reports``, generates image j from x_T of (seed, j), and judges every image with copy
detection (nearest training image above the held-out threshold).

Modules: ``spec`` (the settings), ``sampling`` (the frequency draw, x_T, generation of one
chunk; needs the model stack), ``chunks`` (the chunk files and their gather; numpy and pandas
only), ``copies`` (copy detection of every image and the summary) and ``figures`` (the most
similar copies beside their training images).
"""
