# A rollout's candidate may be a pipeline version (issue #14: rollouts apply to pipelines too).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0007_merge_0006_density_0006_endpoint_outlier_scoring"),
        ("pipelines", "0002_feature_set_team"),
        ("registry", "0002_promotion_requests_webhooks_watchers"),
    ]

    operations = [
        migrations.AlterField(
            model_name="rollout",
            name="candidate",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="rollouts",
                to="registry.modelversion",
            ),
        ),
        migrations.AddField(
            model_name="rollout",
            name="candidate_pipeline",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="rollouts",
                to="pipelines.pipelineversion",
            ),
        ),
        migrations.AddConstraint(
            model_name="rollout",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("candidate__isnull", False), ("candidate_pipeline__isnull", True)),
                    models.Q(("candidate__isnull", True), ("candidate_pipeline__isnull", False)),
                    _connector="OR",
                ),
                name="rollout_one_candidate",
            ),
        ),
    ]
