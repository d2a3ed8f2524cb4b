from django.db import models


class Signup(models.Model):
    email = models.EmailField(unique=True)
    username = models.CharField(max_length=40, unique=True, null=True)
    welcomed_at = models.DateTimeField(null=True)
