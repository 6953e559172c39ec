from django.urls import path

from inference.batch import api

urlpatterns = [
    path("batch-jobs/", api.JobListCreate.as_view(), name="batch-job-list"),
    path("batch-jobs/<int:job_id>/", api.JobDetail.as_view(), name="batch-job-detail"),
    path("batch-jobs/<int:job_id>/cancel", api.JobCancel.as_view(), name="batch-job-cancel"),
    path("batch-jobs/<int:job_id>/resume", api.JobResume.as_view(), name="batch-job-resume"),
    path("batch-jobs/<int:job_id>/result", api.JobResult.as_view(), name="batch-job-result"),
    path("batch-jobs/<int:job_id>/errors", api.JobErrors.as_view(), name="batch-job-errors"),
    path("batch-jobs/<int:job_id>/attach", api.JobAttach.as_view(), name="batch-job-attach"),
]
