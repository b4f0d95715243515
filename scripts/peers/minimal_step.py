#!/usr/bin/env python
"""The floor: a hand-written training loop of an MLP VAE, no Keras model, no TFP.

Weights are plain tf.Variables (Glorot-uniform kernels, zero biases); one
``tf.function`` (``--jit true``: XLA) runs a whole epoch of steps with ``tf.while_loop``
over a pre-shuffled device tensor (no input pipeline, no per-step Python). Per step: the
encoder MLP, mean and log-variance heads, z = mean + exp(log_var / 2) * eps, the decoder
MLP to logits, the exact Bernoulli log-probability (softplus form) + analytic KL, the
gradient, and a hand-written Adam update. What is left between this and kvae's step is
what a library adds. Default shape: Burda et al.'s 784-200-200-50 tanh MLP.
Protocol and JSON: _protocol.py.
"""

import _protocol


def main():
    p = _protocol.parser(__doc__.splitlines()[0], hidden="200,200", latent_dim=50)
    p.add_argument("--activation", default="tanh", choices=["tanh", "relu"])
    args = p.parse_args()
    _protocol.check(p, args)
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(args.seed)
    x_train, x_test = _protocol.mnist(args, flat=True)
    hidden = [int(h) for h in args.hidden.split(",") if h]
    act = getattr(tf.math, args.activation) if args.activation == "tanh" else tf.nn.relu
    rng = np.random.default_rng(args.seed)

    def dense(n_in, n_out):
        limit = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32)
        return [tf.Variable(w), tf.Variable(np.zeros(n_out, np.float32))]

    sizes = [784, *hidden]
    enc = [dense(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]
    head = dense(sizes[-1], 2 * args.latent_dim)
    dsizes = [args.latent_dim, *hidden]
    dec = [dense(a, b) for a, b in zip(dsizes, dsizes[1:], strict=False)]
    out = dense(dsizes[-1], 784)
    params = [v for layer in [*enc, head, *dec, out] for v in layer]
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in params]
    step_count = tf.Variable(0.0)

    def neg_elbo(x, eps):
        h = x
        for w, b in enc:
            h = act(h @ w + b)
        stats = h @ head[0] + head[1]
        mean, log_var = tf.split(stats, 2, axis=1)
        z = mean + tf.exp(0.5 * log_var) * eps
        h = z
        for w, b in dec:
            h = act(h @ w + b)
        logits = h @ out[0] + out[1]
        rec = tf.reduce_sum(tf.nn.softplus(logits) - x * logits, axis=1)
        kl = 0.5 * tf.reduce_sum(tf.square(mean) + tf.exp(log_var) - 1.0 - log_var, axis=1)
        return rec + kl

    b1, b2, lr = 0.9, 0.999, args.lr

    def step(x, eps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(neg_elbo(x, eps))
        grads = tape.gradient(loss, params)
        step_count.assign_add(1.0)
        alpha = lr * tf.sqrt(1 - b2**step_count) / (1 - b1**step_count)
        for v, g, (m, s) in zip(params, grads, moments, strict=True):
            m.assign(b1 * m + (1 - b1) * g)
            s.assign(b2 * s + (1 - b2) * tf.square(g))
            v.assign_sub(alpha * m / (tf.sqrt(s) + 1e-7))
        return loss

    bs = args.batch_size
    steps = len(x_train) // bs  # whole batches only: the last partial batch is dropped

    @tf.function(jit_compile=args.jit == "true")
    def epoch(data, seed):
        def body(i, total):
            x = tf.slice(data, [i * bs, 0], [bs, 784])
            eps = tf.random.stateless_normal((bs, args.latent_dim), seed=seed + i)
            return i + 1, total + step(x, eps)

        return tf.while_loop(lambda i, _: i < steps, body, (0, 0.0))[1] / steps

    clock = _protocol.Clock()
    data_all = tf.constant(x_train)
    clock.start()
    for e in range(args.epochs):
        order = tf.random.shuffle(tf.range(len(x_train)), seed=args.seed + e)
        epoch(tf.gather(data_all, order), tf.constant([args.seed, e * steps]))
        clock.tick()
    eps = tf.random.stateless_normal((len(x_test), args.latent_dim), seed=[args.seed, 1])
    test = float(tf.reduce_mean(neg_elbo(tf.constant(x_test), eps)))
    _protocol.report(
        "minimal_step",
        args,
        clock,
        steps * bs,
        len(x_test),
        framework=f"tensorflow {tf.__version__}, hand-written loop",
        n_params=int(sum(np.prod(v.shape) for v in params)),
        hidden=hidden,
        activation=args.activation,
        latent_dim=args.latent_dim,
        test_neg_elbo_nats=test,
    )


if __name__ == "__main__":
    main()
