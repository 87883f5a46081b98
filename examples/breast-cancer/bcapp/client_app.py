"""ClientApp: election coding around the app's own model, loss and data."""

from bcapp.task import Net, load_data, loss_fn
from fl_election.clients import byzantine_mod, coded_client_app

train, test = load_data()
app = coded_client_app(Net(), loss_fn, train, test_data=test, mods=[byzantine_mod])
