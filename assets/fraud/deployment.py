"""Serving: the gated model version behind the traffic splitter, on MLServer."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from assets.fraud import policy
from assets.fraud.model import fraud_model, latest_model_version
from shipway.models.tracking import CHAMPION
from shipway.models.training import download_model
from shipway.monitoring.drift import ReferenceProfile
from shipway.resources import MlflowResource, ServingResource, ShipwayHomeResource
from shipway.serving.bundle import write_bundle


@asset(
    group_name="deployment",
    kinds={"seldon", "mlserver"},
    deps=[fraud_model],
    description="The model version that passed its gate, served by MLServer (Open Inference "
    "Protocol v2) behind Shipway's traffic splitter. The first gated version becomes the "
    "`champion` with 100% of traffic; later ones are deployed at 0% until a canary moves them.",
)
def fraud_deployment(
    context: AssetExecutionContext,
    lake: ShipwayHomeResource,
    mlflow: MlflowResource,
    serving: ServingResource,
) -> MaterializeResult:
    model = policy().model
    version = latest_model_version(context.instance)
    bundle_dir = lake.home.serving / model / version
    model_file, reference = download_model(mlflow.tracking_uri, model, version, bundle_dir / "src")
    bundle = write_bundle(bundle_dir, model, version, model_file, ReferenceProfile.load(reference))
    client = serving.client()
    client.deploy(model, version, bundle.path)
    registry = MlflowClient(mlflow.tracking_uri)
    try:
        champion: str | None = registry.get_model_version_by_alias(model, CHAMPION).version
    except MlflowException:
        champion = None
    running = client.status().get(model, {}).get("versions", {})
    if champion is None or champion == version or champion not in running:
        status = client.set_traffic(model, {version: 100})
        registry.set_registered_model_alias(model, CHAMPION, version)
        context.log.info("%s v%s is the champion with 100%% of traffic", model, version)
        champion = version
    else:
        status = client.status()[model]
        context.log.info("%s v%s deployed at 0%% beside champion v%s", model, version, champion)
    return MaterializeResult(
        metadata={
            "model_version": version,
            "champion": champion,
            "traffic_weights": MetadataValue.json(status["weights"]),
            "endpoint": MetadataValue.url(f"{client.url}/v2/models/{model}/infer"),
            "bundle": str(bundle.path),
        }
    )
