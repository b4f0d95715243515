#!/usr/bin/env python
"""Peer: the classic Keras MLP VAE (keras.io / Keras examples) in Keras 3 style.

784 -> Dense(512, relu) -> z_mean, z_log_var (2); a Sampling layer (z = mean +
exp(log_var / 2) * eps); 2 -> Dense(512, relu) -> Dense(784, sigmoid). Loss per image:
784 * binary_crossentropy (Keras' mean over pixels, clipped at 1e-7) + the analytic KL,
averaged over the batch, in a custom ``train_step``. Protocol and JSON: _protocol.py.
"""

import _protocol

PIXELS = 784


def build(hidden, latent_dim, keras, tf):
    ops, layers = keras.ops, keras.layers

    class Sampling(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rng = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            mean, log_var = inputs
            return mean + ops.exp(0.5 * log_var) * keras.random.normal(
                ops.shape(mean), seed=self.rng
            )

    x = keras.Input((PIXELS,))
    h = layers.Dense(hidden, activation="relu")(x)
    mean, log_var = layers.Dense(latent_dim)(h), layers.Dense(latent_dim)(h)
    encoder = keras.Model(x, [mean, log_var, Sampling()([mean, log_var])])
    z = keras.Input((latent_dim,))
    h = layers.Dense(hidden, activation="relu")(z)
    decoder = keras.Model(z, layers.Dense(PIXELS, activation="sigmoid")(h))

    class VAE(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.tracker]

        def terms(self, x):
            mean, log_var, z = self.encoder(x)
            rec = PIXELS * keras.losses.binary_crossentropy(x, self.decoder(z))
            kl = -0.5 * ops.sum(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=1)
            return rec, kl

        def train_step(self, data):
            with tf.GradientTape() as tape:
                rec, kl = self.terms(data)
                loss = ops.mean(rec) + ops.mean(kl)
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result()}

    return VAE()


def test_neg_elbo(model, x, tf):
    """One z per test image, analytic KL: the mean negative ELBO in nats."""
    neg_elbo = tf.function(lambda xb: tf.reduce_sum(tf.add(*model.terms(xb))))
    total = sum(float(neg_elbo(x[i : i + 1000])) for i in range(0, len(x), 1000))
    return total / len(x)


def run_example(name, build_fn, description, *, hidden, flat):
    """Train a Keras-example VAE by the protocol and print its JSON line (the conv example's
    ``main`` runs this too: the two examples differ only in their networks)."""
    p = _protocol.parser(description, hidden=hidden)
    args = p.parse_args()
    _protocol.check(p, args)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    x_train, x_test = _protocol.mnist(args, flat=flat)
    model = build_fn(int(args.hidden), args.latent_dim, keras, tf)
    model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=args.jit == "true")
    clock = _protocol.Clock()
    clock.start()
    model.fit(
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[clock.keras_callback(keras.callbacks.Callback)],
    )
    _protocol.report(
        name,
        args,
        clock,
        len(x_train),
        len(x_test),
        framework=f"keras {keras.__version__}",
        n_params=int(model.encoder.count_params() + model.decoder.count_params()),
        test_neg_elbo_nats=test_neg_elbo(model, x_test, tf),
    )


def main():
    run_example("keras3_mlp_example", build, __doc__.splitlines()[0], hidden="512", flat=True)


if __name__ == "__main__":
    main()
