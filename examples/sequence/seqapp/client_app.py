"""ClientApp: election coding around the app's own sequence model, loss and data."""

from fl_election.clients import byzantine_mod, coded_client_app
from seqapp.task import Net, load_data, loss_fn

train, test = load_data()
app = coded_client_app(Net(), loss_fn, train, test_data=test, keys=("x", "y"), mods=[byzantine_mod])
