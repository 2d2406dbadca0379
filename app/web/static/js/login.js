// /login?token=cpt_… stores the token and goes to the dashboards; or paste one in the form.
import { get, setToken, clearToken } from "./api.js";

const params = new URLSearchParams(location.search);
const next = params.get("next");
const target = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
const errorNode = document.getElementById("login-error");

async function signIn(token) {
  token = token.trim();
  if (!token.startsWith("cpt_")) {
    errorNode.textContent = "A user token starts with cpt_.";
    return;
  }
  try {
    const me = await get("/me", { token, redirect: false });
    window.ClickPulseTheme?.setUser(`${me.org_id}:${me.user_id}`);
  } catch (err) {
    clearToken();
    errorNode.textContent = err.status === 401 ? "This token is unknown, revoked or expired." : `Could not sign in: ${err.message}`;
    return;
  }
  setToken(token);
  location.replace(target);
}

const fromUrl = params.get("token");
if (fromUrl) {
  // Drop the token from the address bar and history before anything else.
  history.replaceState(null, "", "/login");
  signIn(fromUrl);
}
document.getElementById("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn(document.getElementById("token").value);
});
