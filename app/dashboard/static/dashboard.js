// Live job progress: the job page polls its own progress while the job is not finished.
(function () {
  var node = document.querySelector("[data-progress-url]");
  if (!node) return;
  var finished = ["succeeded", "failed", "cancelled"];
  function poll() {
    fetch(node.getAttribute("data-progress-url"), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (job) {
        node.querySelector("[data-field=status]").textContent = job.status;
        node.querySelector("[data-field=stage]").textContent = job.stage || "";
        node.querySelector("progress").value = job.progress;
        node.querySelector("[data-field=attempts]").textContent = job.attempts;
        if (finished.indexOf(job.status) < 0) setTimeout(poll, 1000);
        else if (node.getAttribute("data-status") !== job.status) location.reload();
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  if (finished.indexOf(node.getAttribute("data-status")) < 0) setTimeout(poll, 1000);
})();
