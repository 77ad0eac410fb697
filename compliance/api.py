"""`GET /api/v1/compliance/posture/`: the posture page as JSON, for the same people (officers,
governance admins, auditors), any token scope that reads."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import sees_everything
from governance.api.views import ApiViewMixin
from governance.errors import NotPermitted

from .controls import FAIL, NOT_APPLICABLE, PASS, compliance_posture


class FrameworksSerializer(serializers.Serializer):
    soc2 = serializers.ListField(child=serializers.CharField(), help_text="SOC 2 criteria, e.g. CC6.1.")
    hipaa = serializers.ListField(child=serializers.CharField(), help_text="HIPAA Security Rule sections (45 CFR).")
    gdpr = serializers.ListField(child=serializers.CharField(), help_text="GDPR articles.")


class ControlSerializer(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=[PASS, FAIL, NOT_APPLICABLE])
    reason = serializers.CharField(help_text="One line: what passes, or what fails and where.")
    frameworks = FrameworksSerializer()
    evidence_url = serializers.CharField(help_text="The workbench page that shows the evidence (path).")


class PostureSummarySerializer(serializers.Serializer):
    passed = serializers.IntegerField(source="pass")
    failed = serializers.IntegerField(source="fail")
    not_applicable = serializers.IntegerField()


class PostureSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    summary = PostureSummarySerializer()
    controls = ControlSerializer(many=True)


class CompliancePostureView(ApiViewMixin, APIView):
    """Every control of the compliance posture, computed from live state now (docs/compliance.md)."""

    @extend_schema(operation_id="compliance_posture", responses={200: PostureSerializer}, tags=["compliance"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not sees_everything(request.user):
            raise NotPermitted("The compliance posture is for security officers, governance admins and auditors.")
        found = compliance_posture()
        body = {
            "generated_at": found.generated_at,
            "summary": found.counts,
            "controls": [
                {
                    "key": c.key,
                    "title": c.title,
                    "status": c.status,
                    "reason": c.reason,
                    "frameworks": {"soc2": list(c.soc2), "hipaa": list(c.hipaa), "gdpr": list(c.gdpr)},
                    "evidence_url": c.evidence_url,
                }
                for c in found.controls
            ],
        }
        return Response(PostureSerializer(body).data)
