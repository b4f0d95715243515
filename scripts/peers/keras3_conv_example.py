#!/usr/bin/env python
"""Peer: the convolutional VAE of the keras.io example (examples/generative/vae.py).

Encoder 28x28x1 -> Conv2D(32, 3, stride 2, relu, same) -> Conv2D(64, 3, stride 2, relu,
same) -> Flatten -> Dense(16, relu) -> z_mean, z_log_var (2), Sampling layer. Decoder
2 -> Dense(7*7*64, relu) -> Reshape -> Conv2DTranspose(64, 3, stride 2, relu) ->
Conv2DTranspose(32, 3, stride 2, relu) -> Conv2DTranspose(1, 3, sigmoid). Loss per image:
binary_crossentropy summed over 28x28 + the analytic KL, averaged over the batch, in a
custom ``train_step``. Protocol and JSON: _protocol.py.
"""


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

    x = keras.Input((28, 28, 1))
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Dense(hidden, activation="relu")(layers.Flatten()(h))
    mean, log_var = layers.Dense(latent_dim)(h), layers.Dense(latent_dim)(h)
    encoder = keras.Model(x, [mean, log_var, Sampling()([mean, log_var])])
    z = keras.Input((latent_dim,))
    h = layers.Reshape((7, 7, 64))(layers.Dense(7 * 7 * 64, activation="relu")(z))
    h = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(h)
    decoder = keras.Model(z, layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")(h))

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
            bce = keras.losses.binary_crossentropy(x, self.decoder(z))  # mean over channels
            rec = ops.sum(bce, axis=(1, 2))
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


def main():
    from keras3_mlp_example import run_example

    run_example("keras3_conv_example", build, __doc__.splitlines()[0], hidden="16", flat=False)


if __name__ == "__main__":
    main()
