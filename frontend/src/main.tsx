import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { loadConfig } from "./config";
import "./styles.css";

const root = createRoot(document.getElementById("root") as HTMLElement);
loadConfig()
  .then((config) =>
    root.render(
      <StrictMode>
        <App config={config} />
      </StrictMode>,
    ),
  )
  .catch((e: Error) =>
    root.render(
      <main className="page">
        <h1>The app cannot start</h1>
        <p role="alert">{e.message}</p>
      </main>,
    ),
  );
