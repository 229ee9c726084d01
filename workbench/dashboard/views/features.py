"""Features: an SAE's latents read like Neuronpedia pages (density, top contexts, logit effects)."""

import streamlit as st

from workbench import viz_features
from workbench.dashboard import compute
from workbench.dashboard.common import errors_shown, model_name, plain, plot
from workbench.dashboard.results_root import list_saes, resolve_under, results_root

st.header("Features")
st.caption(
    "Latents of a sparse autoencoder trained with `workbench sae train`, read from the SAE folder's "
    "saved corpus index (`workbench sae features --index-out SAE_DIR`), or else from the tour texts. "
    "Density is the share of indexed tokens on which the latent is active; logit effects are its "
    "decoder direction through the unembedding (W_dec @ W_U, no final norm)."
)
with errors_shown():
    name = model_name()
    root = results_root()
    found = [str(p) for p in list_saes(root)]
    if not found:
        st.info(
            f"No SAE under the results root {root}. Train one: `workbench cache --positions all "
            "--windows 128 ...` then `workbench sae train --cache CACHE --out results/sae/NAME` "
            "(README: Features)."
        )
        st.stop()
    chosen = st.selectbox("SAE (under the results root)", found, key="sae_folder")
    folder = str(resolve_under(root, chosen))
    sae = compute.sae(folder)
    st.caption(plain(repr(sae)))
    by_latent, by_token, by_text = st.tabs(["Latent", "Search by token", "Search by text"])
    with by_token:
        token = st.text_input("Token (with its leading space, e.g. ' war')", key="sae_token")
        if token:
            st.dataframe(compute.search_features(name, folder, token, None), hide_index=True)
    with by_text:
        text = st.text_input("Text", key="sae_text")
        if text:
            st.dataframe(compute.search_features(name, folder, None, text), hide_index=True)
    with by_latent:
        latent = st.number_input("Latent", 0, sae.cfg.d_sae - 1, 0, key="sae_latent")
        card = compute.feature_card(name, folder, int(latent))
        st.html(viz_features.feature_card_html(card))
        if card.contexts:
            plot(viz_features.feature_histogram(card), "sae_histogram")
        else:
            st.info(f"Latent {card.latent} is never active on the {card.n_tokens} indexed tokens.")
