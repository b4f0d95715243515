#!/usr/bin/env python
"""Peer: the MLP VAE in TFP's probabilistic-layers style (tf_keras, i.e. Keras 2).

tfp.layers subclass tf_keras layers and cannot go in a Keras 3 model, hence tf_keras.
784 -> Dense(512, relu) -> Dense(params) -> IndependentNormal(2) with a
KLDivergenceRegularizer to N(0, I) (one-sample Monte Carlo KL, as TFP's example);
2 -> Dense(512, relu) -> Dense(784) -> IndependentBernoulli on logits. Loss:
-log p(x | z) (+ the regularizer's KL). The reported test value uses the analytic KL.
Protocol and JSON: _protocol.py.
"""

import _protocol

PIXELS = 784


def main():
    p = _protocol.parser(__doc__.splitlines()[0], hidden="512")
    args = p.parse_args()
    _protocol.check(p, args)
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras as tfk

    tfd, tfpl = tfp.distributions, tfp.layers
    tfk.utils.set_random_seed(args.seed)
    x_train, x_test = _protocol.mnist(args, flat=True)
    hidden, latent = int(args.hidden), args.latent_dim
    prior = tfd.Independent(tfd.Normal(tf.zeros(latent), 1.0), reinterpreted_batch_ndims=1)
    encoder = tfk.Sequential(
        [
            tfk.layers.InputLayer(input_shape=(PIXELS,)),
            tfk.layers.Dense(hidden, activation="relu"),
            tfk.layers.Dense(tfpl.IndependentNormal.params_size(latent)),
            tfpl.IndependentNormal(
                latent, activity_regularizer=tfpl.KLDivergenceRegularizer(prior, weight=1.0)
            ),
        ]
    )
    decoder = tfk.Sequential(
        [
            tfk.layers.InputLayer(input_shape=(latent,)),
            tfk.layers.Dense(hidden, activation="relu"),
            tfk.layers.Dense(PIXELS),
            tfpl.IndependentBernoulli((PIXELS,), tfd.Bernoulli.logits),
        ]
    )
    model = tfk.Model(encoder.inputs, decoder(encoder.outputs[0]))
    model.compile(
        optimizer=tfk.optimizers.Adam(args.lr),
        loss=lambda x, rv_x: -rv_x.log_prob(x),
        jit_compile=args.jit == "true",
    )
    clock = _protocol.Clock()
    clock.start()
    model.fit(
        x_train,
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[clock.keras_callback(tfk.callbacks.Callback)],
    )

    @tf.function
    def neg_elbo(x):
        q = encoder(x)
        rec = -decoder(tf.convert_to_tensor(q)).log_prob(x)
        return tf.reduce_sum(rec + tfd.kl_divergence(q, prior))

    total = sum(float(neg_elbo(x_test[i : i + 1000])) for i in range(0, len(x_test), 1000))
    _protocol.report(
        "tfp_layers",
        args,
        clock,
        len(x_train),
        len(x_test),
        framework=f"tf_keras {tfk.__version__} / tfp {tfp.__version__}",
        n_params=int(model.count_params()),
        test_neg_elbo_nats=total / len(x_test),
    )


if __name__ == "__main__":
    main()
