"""Copy detection: is a generated image a copy of a training image?

Following Somepalli et al. and Dar et al., training images and generations are embedded, each
generation's nearest training image is found by cosine similarity, and a generation is called
a copy when that similarity exceeds the configured percentile (default the 95th) of the
nearest-neighbour similarities of *held-out* real images (never trained on) to the training
set: a generation is flagged only if it is closer to a training image than almost every fresh
real image is. (Not to be confused with the demo corpus's *planted copies*, the studies that
repeat one planted caption with one image: :mod:`memaudit.corpus.planted`.)

Modules: ``spec`` (the embedding settings), ``images`` (listing and reading training and
held-out images, the demo's arrays), ``embedding`` (pixel or network embeddings),
``search`` (nearest neighbours, the copy threshold) and ``reference`` (what the
``embed_training_images`` rule writes and mitigation evaluation loads).
"""
