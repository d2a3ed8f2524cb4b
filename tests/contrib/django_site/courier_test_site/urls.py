from courier_test_signups import views
from django.urls import path

urlpatterns = [path("signup/", views.signup)]
