"""The web app's library side: the time-fair race of both decoders, the marked-token panels and summary,
and the Plotly charts. app.py only wires widgets to these."""
