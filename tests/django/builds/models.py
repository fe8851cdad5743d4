from django.db import models


class Build(models.Model):
    task = models.ForeignKey("workflow.Task", on_delete=models.CASCADE)
    status = models.CharField(max_length=20)
